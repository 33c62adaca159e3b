"""Content addressing for model weights: Kubo-identical CIDs, verified block
tiers, CAR, a trustless gateway and a multi-source fetcher.

Modules (pure logic has no I/O):

* ``cid``, ``pb``, ``importer``, ``dag``, ``resolve``, ``car`` — pure: CIDs,
  dag-pb/UnixFS, DAG building (HAMT-sharded folders too) and walking, paths
  under a CID, CAR framing.
* ``add``, ``blockstore``, ``store`` — files and the memory/disk/network tiers.
* ``gateway`` — ``GET/HEAD /ipfs/{cid}`` (IPFS trustless gateway spec).
* ``fetcher`` — parallel, verified block fetching from many peers.
* ``names``, ``replication``, ``cluster`` — model names and versions, pushes
  to peers, availability checks, IPFS Cluster REST adapter.
* ``cli`` — ``webaccel add|cat|get|pin|car`` and ``models publish|resolve``.
* ``web/cidfetch.mjs``, ``webassets`` — verified, cached loading by CID in the
  browser (OPFS / Cache API), bundled with esbuild.
* ``testing`` — local gateway peers with bandwidth caps, corruption, delay.

CIDs are ``bytes`` (binary form) inside; ``cid.parse`` / ``cid.to_str`` /
``cid.to_cid`` convert at the edges.
"""
