"""UnixFS importer: bytes in, dag-pb/raw blocks out (pure, no I/O).

Builds the same DAGs as Kubo's ``ipfs add`` and the JS ``ipfs-unixfs-importer``
for three profiles (UnixFS spec: https://github.com/ipfs/specs/blob/main/UNIXFS.md;
profiles: IPIP-499, https://specs.ipfs.tech/ipips/ipip-0499/):

============== ===== ========== ======= ======= ======================
profile        CID   leaves     chunk   links   ``ipfs add`` flags
============== ===== ========== ======= ======= ======================
kubo-v0        v0    dag-pb     256 KiB 174     (default)
kubo-v1        v1    raw        256 KiB 174     ``--cid-version=1``
unixfs-v1-2025 v1    raw        1 MiB   1024    ``--profile=unixfs-v1-2025``
============== ===== ========== ======= ======= ======================

Layout is "balanced" (go-unixfs ``importer/balanced``, JS ``layout/balanced``):
leaves are grouped maxLinks at a time into parents, parents into grandparents,
and so on until one root remains; a file of one chunk is its own root.  We build
it bottom-up with one pending list per level, so memory stays at
``depth x maxLinks`` links however long the input is: blocks are yielded as
soon as they exist and the caller decides where they go.

Each internal node is a dag-pb node whose Data is UnixFS ``{Type: File,
filesize, blocksizes}`` (blocksizes = file bytes under each child) and whose
links carry ``Name: ""`` and ``Tsize`` = cumulative encoded size of the child's
DAG.  Both go and JS write the empty name, so we do too: it is in the hash.
"""
from __future__ import annotations

from collections.abc import Iterable, Iterator
from dataclasses import dataclass

import mmh3

from webaccel.content import cid as cidmod
from webaccel.content.errors import UnsupportedDagError
from webaccel.content.pb import (
    DataType,
    PBLink,
    PBNode,
    UnixFSData,
    encode_file_leaf,
    encode_node,
    encode_unixfs,
)

Block = tuple[bytes, bytes]  # (binary CID, block bytes)
Link = tuple[bytes, int, int]  # (binary CID, Tsize, file bytes under it)


@dataclass(frozen=True, slots=True)
class Profile:
    name: str
    cid_version: int
    raw_leaves: bool
    chunk_size: int
    max_links: int
    # Directories: Kubo switches to a HAMT-sharded directory once the plain
    # directory node would reach 256 KiB ("links-bytes": sum of name + CID
    # lengths, >= threshold as Kubo 0.22/boxo v0.11 do; "block-bytes": the
    # encoded block size, > threshold, IPIP-499 2025 profile).  See
    # build_directory_blocks.
    shard_threshold: int = 262_144
    shard_strategy: str = "links-bytes"


PROFILES: dict[str, Profile] = {
    "kubo-v0": Profile("kubo-v0", 0, False, 262_144, 174),
    "kubo-v1": Profile("kubo-v1", 1, True, 262_144, 174),
    "unixfs-v1-2025": Profile("unixfs-v1-2025", 1, True, 1_048_576, 1024, 262_144, "block-bytes"),
}
DEFAULT_PROFILE = "kubo-v0"


def get_profile(profile: str | Profile) -> Profile:
    if isinstance(profile, Profile):
        return profile
    try:
        return PROFILES[profile]
    except KeyError:
        raise ValueError(f"unknown profile {profile!r}; use one of {', '.join(PROFILES)}") from None


@dataclass(frozen=True, slots=True)
class Entry:
    """A finished DAG: its root CID, cumulative size (Tsize) and content bytes."""

    cid: bytes
    tsize: int
    size: int

    @property
    def cid_str(self) -> str:
        return cidmod.to_str(self.cid)


def fixed_chunks(pieces: Iterable[bytes], size: int) -> Iterator[bytes]:
    """Re-cut arbitrary byte pieces into ``size``-byte chunks (last may be short)."""
    buf = bytearray()
    for piece in pieces:
        if not buf and len(piece) == size:
            yield bytes(piece)
            continue
        buf += piece
        if len(buf) >= size:
            mv = memoryview(buf)
            n = len(buf) // size * size
            for off in range(0, n, size):
                yield bytes(mv[off : off + size])
            mv.release()
            del buf[:n]
    if buf:
        yield bytes(buf)


class FileBuilder:
    """Sans-I/O builder of one UnixFS file: ``push(chunk)`` and ``finish()`` return blocks.

    Chunks must already be cut to the profile's chunk size (all but the last).
    """

    def __init__(self, profile: str | Profile = DEFAULT_PROFILE) -> None:
        self.profile = get_profile(profile)
        self._codec_version = self.profile.cid_version
        # levels[i]: pending (cid, tsize, filesize) at depth i (0 = leaves)
        self._levels: list[list[Link]] = [[]]
        self._nleaves = 0
        self.size = 0
        self.root: Entry | None = None

    def _leaf(self, chunk: bytes) -> tuple[bytes, bytes, int]:
        if self.profile.raw_leaves:
            return cidmod.make(chunk, cidmod.RAW, 1), chunk, len(chunk)
        block = encode_file_leaf(chunk)
        return cidmod.make(block, cidmod.DAG_PB, self._codec_version), block, len(block)

    def _parent(self, children: list[Link]) -> tuple[Block, Link]:
        filesize = sum(c[2] for c in children)
        data = encode_unixfs(
            UnixFSData(DataType.FILE, None, filesize, tuple(c[2] for c in children))
        )
        block = encode_node(PBNode(data, tuple(PBLink(c[0], "", c[1]) for c in children)))
        c = cidmod.make(block, cidmod.DAG_PB, self._codec_version)
        return (c, block), (c, len(block) + sum(ch[1] for ch in children), filesize)

    def push(self, chunk: bytes) -> list[Block]:
        if self.root is not None:
            raise RuntimeError("FileBuilder already finished")
        c, block, tsize = self._leaf(chunk)
        self._nleaves += 1
        self.size += len(chunk)
        out: list[Block] = [(c, block)]
        self._levels[0].append((c, tsize, len(chunk)))
        depth = 0
        maxl = self.profile.max_links
        # A full level becomes one parent one level up at once: nothing more
        # can join it, and if the file ends here finish() finds that parent
        # alone on the top level and makes it the root.
        while len(self._levels[depth]) == maxl:
            blk, link = self._parent(self._levels[depth])
            out.append(blk)
            self._levels[depth] = []
            if depth + 1 == len(self._levels):
                self._levels.append([])
            self._levels[depth + 1].append(link)
            depth += 1
        return out

    def finish(self) -> list[Block]:
        """Flush the pending levels; the last block returned is the root."""
        if self.root is not None:
            raise RuntimeError("FileBuilder already finished")
        out: list[Block] = []
        if self._nleaves == 0:
            if self.profile.raw_leaves:
                c, block, tsize = self._leaf(b"")
            else:
                block = encode_node(PBNode(data=encode_unixfs(UnixFSData(DataType.FILE, None, 0))))
                c, tsize = cidmod.make(block, cidmod.DAG_PB, self._codec_version), len(block)
            self.root = Entry(c, tsize, 0)
            return [(c, block)]
        levels = self._levels
        top = max(i for i, lvl in enumerate(levels) if lvl)
        depth = -1
        while self.root is None:
            depth += 1
            pending = levels[depth]
            if not pending:
                continue
            if depth == top and len(pending) == 1:
                c, tsize, fsize = pending[0]
                self.root = Entry(c, tsize, fsize)
                break
            blk, link = self._parent(pending)
            out.append(blk)
            levels[depth] = []
            if depth + 1 == len(levels):
                levels.append([])
            levels[depth + 1].append(link)
            top = max(top, depth + 1)
        return out


def import_file(pieces: Iterable[bytes],
                profile: str | Profile = DEFAULT_PROFILE) -> Iterator[Block]:
    """Yield ``(cid, block)`` for every block of the file; the root comes last.

    ``pieces`` may be cut any way; they are re-chunked to the profile's size.
    Use :class:`FileBuilder` directly to also get the root's Tsize and size.
    """
    b = FileBuilder(profile)
    for chunk in fixed_chunks(pieces, b.profile.chunk_size):
        yield from b.push(chunk)
    yield from b.finish()


def import_bytes(data: bytes,
                 profile: str | Profile = DEFAULT_PROFILE) -> tuple[Entry, list[Block]]:
    """Whole-buffer convenience for small inputs and tests."""
    b = FileBuilder(profile)
    blocks: list[Block] = []
    size = b.profile.chunk_size
    for off in range(0, len(data), size):
        blocks += b.push(data[off : off + size])
    blocks += b.finish()
    assert b.root is not None
    return b.root, blocks


def build_symlink(target: str, profile: str | Profile = DEFAULT_PROFILE) -> tuple[Entry, Block]:
    p = get_profile(profile)
    block = encode_node(PBNode(data=encode_unixfs(UnixFSData(DataType.SYMLINK, target.encode()))))
    c = cidmod.make(block, cidmod.DAG_PB, p.cid_version)
    return Entry(c, len(block), 0), (c, block)


def hamt_hash(name: str) -> bytes:
    """The 8 bytes a HAMT directory indexes ``name`` by.

    go-unixfs/boxo use murmur3-x64-64 (``spaolacci/murmur3``'s ``New64``: the
    first 64-bit half of MurmurHash3_x64_128, seed 0, written big-endian) of
    the UTF-8 name.  We take the hash from PyPI ``mmh3`` rather than writing it
    by hand; ``hash64`` returns that same first half as an unsigned integer.
    """
    h1, _h2 = mmh3.hash64(name.encode("utf-8"), seed=0, x64arch=True, signed=False)
    return h1.to_bytes(8, "big")


HAMT_FANOUT = 256  # boxo's DefaultShardWidth; 8 bits of the hash per level
HAMT_MURMUR3 = 0x22  # multicodec murmur3-x64-64, UnixFS hashType


def needs_sharding(items: list[tuple[str, Entry]], profile: str | Profile = DEFAULT_PROFILE,
                   plain_block_len: int | None = None) -> bool:
    """Whether Kubo would make this folder a HAMT (see :func:`build_directory`)."""
    p = get_profile(profile)
    if p.shard_strategy == "links-bytes":
        # boxo v0.11 (Kubo 0.22), io/directory.go needsToSwitchToHAMTDir:
        # estimatedSize = sum(len(name) + len(cid bytes)); switch when >= the
        # threshold.  (Later boxo, with IPIP-499, switches only when >.)
        estimate = sum(len(n.encode("utf-8")) + len(e.cid) for n, e in items)
        return estimate >= p.shard_threshold
    if plain_block_len is None:
        plain_block_len = len(_plain_directory_block(items))
    return plain_block_len > p.shard_threshold


def _plain_directory_block(items: list[tuple[str, Entry]]) -> bytes:
    links = tuple(PBLink(e.cid, n, e.tsize) for n, e in items)
    return encode_node(PBNode(encode_unixfs(UnixFSData(DataType.DIRECTORY)), links))


def _hamt_node(items: list[tuple[bytes, str, Entry]], depth: int, version: int,
               out: list[Block]) -> tuple[bytes, int]:
    """One HAMT shard over ``(hash, name, entry)``; appends its blocks (children
    first) to ``out`` and returns ``(cid, tsize)``.

    The shape is the one boxo's ``hamt.Shard`` converges to whatever the
    insertion order: a slot (``hash[depth]``) that one name falls in holds that
    name's link, named ``"%02X" % slot + name``; a slot that several names fall
    in holds a sub-shard built from the next byte of their hashes, named
    ``"%02X" % slot``.  Links are in slot order; the shard's UnixFS Data is
    ``{Type: HAMTShard, Data: bitfield, hashType: murmur3, fanout: 256}``, the
    bitfield a big-endian integer with bit ``slot`` set per used slot and
    leading zero bytes dropped (go-bitfield ``Bytes()``).
    """
    if depth >= 8:
        raise UnsupportedDagError(
            "two names in one folder have the same 64-bit HAMT hash; rename one of them"
        )
    slots: dict[int, list[tuple[bytes, str, Entry]]] = {}
    for item in items:
        slots.setdefault(item[0][depth], []).append(item)
    links: list[PBLink] = []
    bits = 0
    for slot in sorted(slots):
        group = slots[slot]
        bits |= 1 << slot
        prefix = f"{slot:02X}"
        if len(group) == 1:
            _h, name, e = group[0]
            links.append(PBLink(e.cid, prefix + name, e.tsize))
        else:
            c, tsize = _hamt_node(group, depth + 1, version, out)
            links.append(PBLink(c, prefix, tsize))
    bitfield = bits.to_bytes(HAMT_FANOUT // 8, "big").lstrip(b"\0")
    data = encode_unixfs(UnixFSData(DataType.HAMT_SHARD, bitfield, hash_type=HAMT_MURMUR3,
                                    fanout=HAMT_FANOUT))
    block = encode_node(PBNode(data, tuple(links)))
    c = cidmod.make(block, cidmod.DAG_PB, version)
    out.append((c, block))
    return c, len(block) + sum(link.tsize or 0 for link in links)


def build_hamt_directory(entries: Iterable[tuple[str, Entry]],
                         profile: str | Profile = DEFAULT_PROFILE) -> tuple[Entry, list[Block]]:
    """A HAMT-sharded UnixFS directory (fanout 256, murmur3): ``(root, blocks)``,
    the root block last.  Same CIDs as Kubo's ``ipfs add -r`` of a large folder."""
    p = get_profile(profile)
    items = _checked_items(entries)
    out: list[Block] = []
    hashed = [(hamt_hash(n), n, e) for n, e in items]
    c, tsize = _hamt_node(hashed, 0, p.cid_version, out)
    return Entry(c, tsize, sum(e.size for _, e in items)), out


def _checked_items(entries: Iterable[tuple[str, Entry]]) -> list[tuple[str, Entry]]:
    items = sorted(entries, key=lambda e: e[0].encode("utf-8"))
    names = [n for n, _ in items]
    if len(set(names)) != len(names):
        raise ValueError("duplicate names in a directory")
    return items


def build_directory_blocks(entries: Iterable[tuple[str, Entry]],
                           profile: str | Profile = DEFAULT_PROFILE
                           ) -> tuple[Entry, list[Block]]:
    """A UnixFS directory as Kubo builds it: plain, or HAMT-sharded past the
    profile's threshold.  Returns ``(root, blocks)`` with the root block last."""
    p = get_profile(profile)
    items = _checked_items(entries)
    block = _plain_directory_block(items)
    if needs_sharding(items, p, len(block)):
        return build_hamt_directory(items, p)
    c = cidmod.make(block, cidmod.DAG_PB, p.cid_version)
    entry = Entry(c, len(block) + sum(e.tsize for _, e in items), sum(e.size for _, e in items))
    return entry, [(c, block)]


def build_directory(
    entries: Iterable[tuple[str, Entry]], profile: str | Profile = DEFAULT_PROFILE
) -> tuple[Entry, Block]:
    """A plain (non-sharded) UnixFS directory node over named children.

    Links are sorted by name bytes, as go and JS do.  Kubo and the JS importer
    switch to a HAMT-sharded directory (UnixFS type HAMTShard, fanout 256) when
    the plain node would reach 256 KiB: estimated as the sum of name + CID
    lengths (links-bytes), or for unixfs-v1-2025 as the encoded block size
    (block-bytes).  That is roughly 4,000-7,000 entries in one folder.  This
    function builds only the plain node and raises UnsupportedDagError past the
    threshold; :func:`build_directory_blocks` builds either kind.
    """
    p = get_profile(profile)
    items = _checked_items(entries)
    block = _plain_directory_block(items)
    if needs_sharding(items, p, len(block)):
        raise UnsupportedDagError(
            f"directory with {len(items)} entries would be HAMT-sharded by Kubo "
            f"(over {p.shard_threshold} bytes); use build_directory_blocks"
        )
    c = cidmod.make(block, cidmod.DAG_PB, p.cid_version)
    return Entry(c, len(block) + sum(e.tsize for _, e in items), sum(e.size for _, e in items)), (
        c,
        block,
    )
