// Reference CIDs from the JS ipfs-unixfs-importer (npm, node_modules at repo root).
// usage: node js_import.mjs PROFILE PATH   -> prints the root CID of PATH (file or folder)
import { importer } from 'ipfs-unixfs-importer'
import { fixedSize } from 'ipfs-unixfs-importer/chunker'
import { balanced } from 'ipfs-unixfs-importer/layout'
import fs from 'node:fs'
import path from 'node:path'

// the importer only needs put(); keep nothing (we want CIDs, not blocks)
const blackHole = { put: async (cid) => cid, has: async () => false }

const [profile, target] = process.argv.slice(2)
const options = {
  'kubo-v1': { cidVersion: 1, rawLeaves: true, chunker: fixedSize({ chunkSize: 262144 }), layout: balanced({ maxChildrenPerNode: 174 }) },
  'kubo-v0': { cidVersion: 0, rawLeaves: false, chunker: fixedSize({ chunkSize: 262144 }), layout: balanced({ maxChildrenPerNode: 174 }) },
  'unixfs-v1-2025': { profile: 'unixfs-v1-2025' },
}[profile] ?? custom(profile)
function custom (p) {
  // custom:CHUNK:LINKS:RAWLEAVES(0|1):CIDVERSION  (small shapes that make deep trees)
  const m = /^custom:(\d+):(\d+):([01]):([01])$/.exec(p)
  if (!m) return undefined
  return { cidVersion: Number(m[4]), rawLeaves: m[3] === '1', chunker: fixedSize({ chunkSize: Number(m[1]) }), layout: balanced({ maxChildrenPerNode: Number(m[2]) }) }
}
if (!options) { console.error('unknown profile ' + profile); process.exit(2) }

const base = path.dirname(path.resolve(target))
function * walk (p) {
  const st = fs.lstatSync(p)
  const rel = path.relative(base, p)
  if (st.isDirectory()) {
    const names = fs.readdirSync(p)
    if (names.length === 0) yield { path: rel }
    for (const n of names) yield * walk(path.join(p, n))
  } else if (st.isFile()) {
    yield { path: rel, content: fs.createReadStream(p, { highWaterMark: 1 << 20 }) }
  }
}
const top = path.basename(path.resolve(target))
let root
for await (const entry of importer(walk(path.resolve(target)), blackHole, options)) {
  if (entry.path === top) root = entry.cid
}
console.log(root.toString())
