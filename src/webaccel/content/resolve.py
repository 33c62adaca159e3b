"""Paths under a CID (``CID/a/b``, ``/ipfs/CID/a/b``), resolved through UnixFS
directories, plain or HAMT-sharded (pure, no I/O).

:func:`resolve_steps` is a sans-I/O generator: it yields each CID whose block
it needs and is sent that block back; it returns a :class:`Resolved`.  The
CLI drives it from the local store, the block store and the gateway from the
tiered (network) store, tests from a dict:

    >>> resolve_with(lambda c: blocks[c], root, "sub/file.bin")  # doctest: +SKIP

HAMT lookups follow boxo's ``hamt.Shard.Find``: the name's murmur3-x64-64
hash is read ``log2(fanout)`` bits at a time from the most significant bit;
at each level the link named with that slot's upper-case hex prefix is either
the entry (prefix + name) or a sub-shard (prefix alone) to descend into.
"""
from __future__ import annotations

from collections.abc import Awaitable, Callable, Generator
from dataclasses import dataclass

from webaccel.content import cid as cidmod
from webaccel.content import dag
from webaccel.content.errors import DecodeError, InvalidPathError, UnsupportedDagError
from webaccel.content.importer import HAMT_MURMUR3, hamt_hash


@dataclass(frozen=True, slots=True)
class Resolved:
    """``cids``: the root, then one CID per path segment (the last is the target).
    ``proof``: every block read on the way (root, directories, HAMT shards), in
    order: what a trustless client needs to verify the path."""

    cids: list[bytes]
    proof: list[bytes]

    @property
    def target(self) -> bytes:
        return self.cids[-1]


def parse_ipfs_path(text: str) -> tuple[bytes, str]:
    """``(root CID, path)`` from ``CID``, ``CID/a/b`` or ``/ipfs/CID/a/b``.

    InvalidCIDError when the first segment is not a CID; the path keeps its
    segments as given (no ``.``/``..`` processing: those name no UnixFS entry).
    """
    s = text.strip()
    if s.startswith("/ipfs/"):
        s = s[len("/ipfs/"):]
    elif s.startswith("ipfs/"):
        s = s[len("ipfs/"):]
    head, _, rest = s.partition("/")
    return cidmod.parse(head), rest.strip("/")


def segments(path: str) -> list[str]:
    return [p for p in path.split("/") if p]


def _pad(fanout: int) -> int:
    return len(f"{fanout - 1:X}")


def _hamt_params(node: dag.Node) -> tuple[int, int]:
    """``(fanout, bits per level)`` of a HAMT shard; DecodeError if unusable."""
    assert node.fs is not None
    fanout = node.fs.fanout or 0
    if node.fs.hash_type != HAMT_MURMUR3:
        raise UnsupportedDagError("HAMT shard with a hash other than murmur3-x64-64")
    if fanout < 2 or fanout & (fanout - 1) or fanout > 1024:
        raise DecodeError(f"HAMT shard fanout {fanout} is not a power of two up to 1024")
    return fanout, fanout.bit_length() - 1


def hamt_children(node: dag.Node) -> tuple[list[tuple[str, bytes, int]], list[bytes]]:
    """One HAMT shard's ``(entries, sub_shards)``: entries as ``(name, cid, tsize)``
    with the slot prefix removed, sub-shards as CIDs (same directory, deeper)."""
    fanout, _bits = _hamt_params(node)
    pad = _pad(fanout)
    assert node.pb is not None
    entries: list[tuple[str, bytes, int]] = []
    shards: list[bytes] = []
    for link in node.pb.links:
        name = link.name or ""
        if len(name) < pad:
            raise DecodeError("HAMT link name shorter than its slot prefix")
        if len(name) == pad:
            shards.append(link.hash)
        else:
            entries.append((name[pad:], link.hash, link.tsize or 0))
    return entries, shards


def _plain_lookup(node: dag.Node, name: str) -> bytes | None:
    found = [c for n, c, _ in dag.dir_entries(node) if n == name]
    if len(found) > 1:
        raise DecodeError("directory has two entries with the same name")
    return found[0] if found else None


def resolve_steps(root: bytes, path: str) -> Generator[bytes, bytes, Resolved]:
    """Resolve ``path`` under ``root``; yields CIDs, is sent their blocks."""
    cids = [root]
    proof: list[bytes] = []
    cur = root
    for name in segments(path):
        block = yield cur
        node = dag.decode(cur, block)
        proof.append(cur)
        if node.kind == "directory":
            child = _plain_lookup(node, name)
        elif node.kind == "hamt":
            h = int.from_bytes(hamt_hash(name), "big")
            consumed = 0
            child = None
            while True:
                fanout, bits = _hamt_params(node)
                if consumed + bits > 64:
                    raise DecodeError("HAMT deeper than its 64-bit hash")
                slot = (h >> (64 - consumed - bits)) & (fanout - 1)
                consumed += bits
                prefix = f"{slot:0{_pad(fanout)}X}"
                assert node.pb is not None
                hits = [link for link in node.pb.links if (link.name or "").startswith(prefix)]
                shard = next((link for link in hits if link.name == prefix), None)
                if shard is not None:
                    block = yield shard.hash
                    node = dag.decode(shard.hash, block)
                    proof.append(shard.hash)
                    if node.kind != "hamt":
                        raise DecodeError("HAMT sub-shard link to a node that is not a shard")
                    continue
                child = next((link.hash for link in hits if link.name == prefix + name), None)
                break
        else:
            raise InvalidPathError(
                f"{cidmod.to_str(cur)} is a {node.kind}, not a directory: "
                f"nothing is under it (path {path!r})"
            )
        if child is None:
            raise InvalidPathError(
                f"no entry {name!r} in directory {cidmod.to_str(cur)}; "
                "list it (webaccel get) to see what is there"
            )
        cids.append(child)
        cur = child
    return Resolved(cids, proof)


def resolve_with(get: Callable[[bytes], bytes], root: bytes, path: str) -> Resolved:
    """Drive :func:`resolve_steps` with a synchronous block getter."""
    gen = resolve_steps(root, path)
    try:
        c = next(gen)
        while True:
            c = gen.send(get(c))
    except StopIteration as stop:
        return stop.value  # type: ignore[no-any-return]


async def aresolve_with(get: Callable[[bytes], Awaitable[bytes]], root: bytes,
                        path: str) -> Resolved:
    """Drive :func:`resolve_steps` with an async block getter (store, gateway)."""
    gen = resolve_steps(root, path)
    try:
        c = next(gen)
        while True:
            c = gen.send(await get(c))
    except StopIteration as stop:
        return stop.value  # type: ignore[no-any-return]
