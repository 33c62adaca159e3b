// Node driver for tests/content/test_web.py: load CID through cidfetch.mjs from
// the given gateways (no cache), print size, sha-256 and per-gateway counts.
import { createHash } from 'node:crypto'
import { fetchByCid } from '../../src/webaccel/content/web/cidfetch.mjs'

const [cid, ...gateways] = process.argv.slice(2)
const t0 = performance.now()
const r = await fetchByCid(cid, { gateways, store: null, concurrency: 8 })
const ms = performance.now() - t0
console.log(JSON.stringify({
  size: r.bytes.byteLength,
  sha256: createHash('sha256').update(r.bytes).digest('hex'),
  blocks: r.blocks,
  ms,
  gateways: r.gateways
}))
