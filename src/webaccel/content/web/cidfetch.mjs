// Verified, cached model loading by CID, for the worker page (and Node).
//
// fetchByCid(cid) returns the bytes of the UnixFS file at `cid`:
//   warm: from the browser's origin private file system (OPFS) or Cache API,
//         keyed by CID (`webaccel-cid-v1/<cid>`); only verified bytes go there,
//         and a CID names immutable bytes, so a hit needs no network at all and
//         survives page (and browser) restarts.
//   cold: raw blocks (`?format=raw`, IPFS trustless gateway spec) from every
//         gateway it is given, `concurrency` requests in flight spread round
//         robin; each block is hashed (sha2-256, WebCrypto) and compared with
//         its CID before use; a bad or missing block is asked of the next
//         gateway, and a gateway that lied is not asked again.
// Libraries: multiformats (CID, sha2), @ipld/dag-pb, ipfs-unixfs; bundled for the
// browser with esbuild (webaccel.content.webassets.build_bundle).
import { CID } from 'multiformats/cid'
import { sha256 } from 'multiformats/hashes/sha2'
import { identity } from 'multiformats/hashes/identity'
import * as dagPB from '@ipld/dag-pb'
import { UnixFS } from 'ipfs-unixfs'

const RAW = 0x55
export const CACHE_NAME = 'webaccel-cid-v1'

export class VerificationError extends Error {
  constructor (message) { super(message); this.code = 'LOAD_FAILED' }
}

function equalBytes (a, b) {
  if (a.byteLength !== b.byteLength) return false
  for (let i = 0; i < a.byteLength; i++) if (a[i] !== b[i]) return false
  return true
}

async function verify (cid, bytes) {
  const code = cid.multihash.code
  if (code === identity.code) return equalBytes(cid.multihash.digest, bytes)
  if (code !== sha256.code) throw new VerificationError(`cannot verify hash 0x${code.toString(16)}`)
  const mh = await sha256.digest(bytes)
  return equalBytes(mh.digest, cid.multihash.digest)
}

class Sources {
  constructor (gateways, fetchImpl, timeoutMs) {
    this.gateways = gateways.map(g => ({ url: g.replace(/\/$/, ''), banned: false, blocks: 0, bad: 0, errors: 0 }))
    this.fetch = fetchImpl
    this.timeoutMs = timeoutMs
    this.next = 0
  }

  async block (cid) {
    const tried = new Set()
    let lastErr = null
    for (let attempt = 0; attempt < this.gateways.length * 2; attempt++) {
      const live = this.gateways.filter(g => !g.banned && !tried.has(g))
      if (live.length === 0) break
      const g = live[this.next++ % live.length]
      const ctl = new AbortController()
      const timer = setTimeout(() => ctl.abort(), this.timeoutMs)
      try {
        const resp = await this.fetch(`${g.url}/ipfs/${cid}?format=raw`, {
          headers: { accept: 'application/vnd.ipld.raw' }, signal: ctl.signal
        })
        if (!resp.ok) { tried.add(g); g.errors++; lastErr = new Error(`HTTP ${resp.status}`); continue }
        const bytes = new Uint8Array(await resp.arrayBuffer())
        if (!(await verify(cid, bytes))) { g.banned = true; g.bad++; continue }
        g.blocks++
        return bytes
      } catch (err) {
        tried.add(g); g.errors++; lastErr = err
      } finally {
        clearTimeout(timer)
      }
    }
    const e = new Error(`no gateway returned a valid block ${cid}${lastErr ? `: ${lastErr.message}` : ''}`)
    e.code = 'MODEL_NOT_FOUND'
    throw e
  }
}

// Walk the file DAG: fetch the root, then children in parallel (bounded), and
// copy every leaf's bytes to its offset (known from the parents' blocksizes).
async function fetchFile (root, sources, concurrency) {
  let out = null
  let size = 0
  let blocks = 0
  const queue = [{ cid: root, offset: 0 }]
  const running = new Set()
  const handle = ({ cid, offset }, bytes) => {
    blocks++
    if (cid.code === RAW) {
      if (out === null) { out = bytes; size = bytes.byteLength; return }
      out.set(bytes, offset); return
    }
    if (cid.code !== dagPB.code) throw new VerificationError(`unsupported codec 0x${cid.code.toString(16)}`)
    const node = dagPB.decode(bytes)
    const fs = UnixFS.unmarshal(node.Data)
    if (fs.type !== 'file' && fs.type !== 'raw') throw new VerificationError(`CID is a UnixFS ${fs.type}, not a file`)
    if (out === null) { size = Number(fs.fileSize()); out = new Uint8Array(size) }
    let pos = offset
    if (fs.data && fs.data.byteLength) { out.set(fs.data, pos); pos += fs.data.byteLength }
    node.Links.forEach((link, i) => {
      queue.push({ cid: link.Hash, offset: pos })
      pos += Number(fs.blockSizes[i])
    })
  }
  while (queue.length || running.size) {
    while (queue.length && running.size < concurrency) {
      const job = queue.shift()
      const p = sources.block(job.cid).then(bytes => { handle(job, bytes) }).finally(() => running.delete(p))
      running.add(p)
    }
    if (running.size) await Promise.race(running)
  }
  return { bytes: out ?? new Uint8Array(0), size, blocks }
}

// Where verified bytes are kept, keyed by CID.  Both survive page and
// browser restarts; OPFS reads back faster in Chromium, the Cache API is
// everywhere (and is what Node tests can stub).
class CacheApiStore {
  constructor (cacheStorage, name) { this.cs = cacheStorage; this.name = name; this.kind = 'cache-api' }
  async get (key) {
    const hit = await (await this.cs.open(this.name)).match(key)
    return hit ? new Uint8Array(await hit.arrayBuffer()) : null
  }

  async put (key, bytes) {
    await (await this.cs.open(this.name)).put(key, new Response(bytes, { headers: { 'content-type': 'application/octet-stream' } }))
  }

  async delete (key) { return (await this.cs.open(this.name)).delete(key) }
}

// Reads an OPFS file with a synchronous access handle, which only dedicated
// workers have: one read() into a buffer that is then transferred (no copy).
// File.arrayBuffer() on the page streams the bytes through the browser
// process's blob system instead (32 MiB: ~100 ms warm in Chromium 156 here).
// The worker keeps each folder's handle: opening OPFS took 30-35 ms after a
// browser restart, so prepareStore() has it done at page boot, off the path of
// the first model load.
const SYNC_READER = `const dirs = new Map()
function dirOf (name) {
  if (!dirs.has(name)) {
    const p = navigator.storage.getDirectory().then(root => root.getDirectoryHandle(name, { create: true }))
    p.catch(() => dirs.delete(name))
    dirs.set(name, p)
  }
  return dirs.get(name)
}
onmessage = async (e) => {
  const { id, dir, file } = e.data
  try {
    const d = await dirOf(dir)
    if (file === undefined) { postMessage({ id, buf: null }); return }
    const h = await (await d.getFileHandle(file)).createSyncAccessHandle()
    try {
      const buf = new ArrayBuffer(h.getSize())
      h.read(new Uint8Array(buf), { at: 0 })
      postMessage({ id, buf }, [buf])
    } finally { h.close() }
  } catch (err) { postMessage({ id, error: err.name, message: String(err.message) }) }
}`

class SyncReader {
  constructor () {
    this.worker = new Worker(URL.createObjectURL(new Blob([SYNC_READER], { type: 'text/javascript' })))
    this.pending = new Map()
    this.next = 0
    this.worker.onmessage = (e) => {
      const p = this.pending.get(e.data.id)
      this.pending.delete(e.data.id)
      if (e.data.error) p.reject(Object.assign(new Error(e.data.message), { name: e.data.error }))
      else p.resolve(e.data.buf === null ? null : new Uint8Array(e.data.buf))
    }
  }

  // file undefined: only open the folder
  read (dir, file) {
    const id = this.next++
    return new Promise((resolve, reject) => {
      this.pending.set(id, { resolve, reject })
      this.worker.postMessage({ id, dir, file })
    })
  }
}

let syncReader
function syncReaderOrNull () {
  if (syncReader === undefined) {
    syncReader = null
    // createSyncAccessHandle exists in dedicated workers only: a page cannot test
    // for it; a worker without it answers with an error and get() falls back.
    if (typeof Worker === 'function' && typeof Blob === 'function' && globalThis.FileSystemFileHandle) {
      try { syncReader = new SyncReader() } catch { syncReader = null }
    }
  }
  return syncReader
}

class OpfsStore {
  constructor (storage, name) { this.storage = storage; this.name = name; this.kind = 'opfs' }
  async dir () { return (await this.storage.getDirectory()).getDirectoryHandle(this.name, { create: true }) }
  static file (key) { return key.replace(/^\/ipfs\//, '') }
  // the worker that reads this origin's OPFS (not a stubbed storage's); null if none
  reader () { return this.storage === globalThis.navigator?.storage ? syncReaderOrNull() : null }
  async get (key) {
    try {
      const t0 = performance.now()
      const reader = this.reader()
      if (reader) {
        try { // the worker opens the folder itself: the page's own open cost ~40 ms after a restart
          const bytes = await reader.read(this.name, OpfsStore.file(key))
          this.timing = { ms: performance.now() - t0, reader: 'sync-worker' }
          return bytes
        } catch (err) {
          if (err && err.name === 'NotFoundError') throw err
          syncReader = null // no sync access handles here: read through File from now on
        }
      }
      const d = await this.dir()
      const t1 = performance.now()
      const fh = await d.getFileHandle(OpfsStore.file(key))
      const bytes = new Uint8Array(await (await fh.getFile()).arrayBuffer())
      this.timing = { ms: performance.now() - t0, open_ms: t1 - t0, reader: 'file' }
      return bytes
    } catch (err) {
      if (err && err.name === 'NotFoundError') return null
      throw err
    }
  }

  async put (key, bytes) {
    const d = await this.dir()
    const tmp = OpfsStore.file(key) + '.partial'
    const w = await (await d.getFileHandle(tmp, { create: true })).createWritable()
    await w.write(bytes)
    await w.close()
    // only complete, verified files get the CID's name
    const fh = await d.getFileHandle(tmp)
    if (fh.move) await fh.move(OpfsStore.file(key))
    else {
      const w2 = await (await d.getFileHandle(OpfsStore.file(key), { create: true })).createWritable()
      await w2.write(bytes); await w2.close(); await d.removeEntry(tmp)
    }
  }

  async delete (key) {
    try { await (await this.dir()).removeEntry(OpfsStore.file(key)); return true } catch { return false }
  }
}

// opts.store: 'opfs' | 'cache-api' | 'auto' (default: OPFS where the page has
// it, else the Cache API) | null (no caching); opts.caches / opts.storage
// override globalThis.caches / navigator.storage.
export function openStore (opts = {}) {
  const want = opts.store === undefined ? 'auto' : opts.store
  if (want === null || want === 'none') return null
  const storage = opts.storage ?? globalThis.navigator?.storage
  const caches = opts.caches === undefined ? globalThis.caches : opts.caches
  const name = opts.cacheName || CACHE_NAME
  if ((want === 'opfs' || want === 'auto') && storage && storage.getDirectory) return new OpfsStore(storage, name)
  if ((want === 'cache-api' || want === 'auto') && caches) return new CacheApiStore(caches, name)
  return null
}

// Starts the store's reader and opens its folder now (a page calls this at
// boot), so the first load from the cache does not pay for it.  Returns the
// time it took; never throws (a store that cannot open is found out by get()).
export async function prepareStore (opts = {}) {
  const t0 = performance.now()
  const store = openStore(opts)
  const reader = store && store.kind === 'opfs' ? store.reader() : null
  if (reader) await reader.read(store.name).catch(() => {})
  return { ms: performance.now() - t0, store: store ? store.kind : null }
}

// opts: gateways (default: this page's origin), concurrency (16), store (see
// openStore), fetch, timeoutMs (30000).
export async function fetchByCid (cidText, opts = {}) {
  const cid = CID.parse(cidText)
  const key = `/ipfs/${cid.toString()}`
  const store = openStore(opts)
  const t0 = performance.now()
  if (store) {
    const bytes = await store.get(key)
    if (bytes) return { bytes, source: 'cache', store: store.kind, ms: performance.now() - t0, blocks: 0, timing: store.timing ?? null }
  }
  const origin = globalThis.location ? globalThis.location.origin : null
  const gateways = opts.gateways && opts.gateways.length ? opts.gateways : [origin]
  const sources = new Sources(gateways, opts.fetch || globalThis.fetch.bind(globalThis), opts.timeoutMs || 30000)
  const { bytes, blocks } = await fetchFile(cid, sources, opts.concurrency || 16)
  const fetchMs = performance.now() - t0
  if (store) await store.put(key, bytes)
  return {
    bytes,
    source: 'network',
    store: store ? store.kind : null,
    ms: performance.now() - t0,
    fetch_ms: fetchMs,
    blocks,
    gateways: sources.gateways.map(({ url, blocks, bad, errors, banned }) => ({ url, blocks, bad, errors, banned }))
  }
}

// Drop a CID from the store (e.g. to measure a cold load again).
export async function evict (cidText, opts = {}) {
  const store = openStore(opts)
  return store ? store.delete(`/ipfs/${CID.parse(cidText).toString()}`) : false
}

// A `fetchModel(url, opts)` for WorkerRuntime: URLs of the form .../ipfs/<cid>
// (or opts.cid) load verified by CID through the cache; others fall back.
export function cidFetchModel (fallback, defaults = {}) {
  prepareStore(defaults) // at page boot, long before the first model load
  return async (url, opts = {}) => {
    const m = /\/ipfs\/([A-Za-z0-9]+)\/?$/.exec(url || '')
    const cid = opts.cid || (m && m[1])
    if (!cid) return fallback(url, opts)
    const origin = m ? url.slice(0, m.index) : undefined
    const gateways = opts.gateways || defaults.gateways || (origin ? [origin] : undefined)
    const r = await fetchByCid(cid, { ...defaults, gateways })
    return { bytes: r.bytes, source: r.source }
  }
}
