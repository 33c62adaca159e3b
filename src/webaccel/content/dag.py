"""Reading UnixFS DAGs block by block (pure, no I/O).

The I/O layers (store, gateway, fetcher) fetch blocks; this module says what a
block means: its children, which children cover a byte range, which child a
directory entry names.  Spec: https://github.com/ipfs/specs/blob/main/UNIXFS.md
"""
from __future__ import annotations

from dataclasses import dataclass

from webaccel.content import cid as cidmod
from webaccel.content.errors import DecodeError, UnsupportedDagError
from webaccel.content.pb import DataType, PBNode, UnixFSData, decode_node, decode_unixfs


@dataclass(frozen=True, slots=True)
class Node:
    """A decoded block: raw leaf, or dag-pb with its UnixFS Data (if any)."""

    cid: bytes
    raw: bytes | None  # the bytes of a raw-codec block
    pb: PBNode | None
    fs: UnixFSData | None

    @property
    def kind(self) -> str:
        if self.raw is not None:
            return "file"
        assert self.fs is not None
        t = self.fs.type
        if t in (DataType.FILE, DataType.RAW):
            return "file"
        if t == DataType.DIRECTORY:
            return "directory"
        if t == DataType.HAMT_SHARD:
            return "hamt"
        if t == DataType.SYMLINK:
            return "symlink"
        return "other"

    @property
    def links(self) -> list[bytes]:
        return [] if self.pb is None else [link.hash for link in self.pb.links]

    @property
    def size(self) -> int:
        """File bytes under this node (0 for directories)."""
        if self.raw is not None:
            return len(self.raw)
        assert self.fs is not None
        if self.kind != "file":
            return 0
        return self.fs.size


def decode(c: bytes, block: bytes) -> Node:
    codec = cidmod.codec_of(c)
    if codec == cidmod.RAW:
        return Node(c, block, None, None)
    pb = decode_node(block)
    if pb.data is None:
        raise DecodeError("dag-pb node without UnixFS Data")
    fs = decode_unixfs(pb.data)
    if (fs.type in (DataType.FILE, DataType.RAW) and pb.links
            and len(fs.blocksizes) != len(pb.links)):
        raise DecodeError("UnixFS file node: blocksizes and links differ in number")
    return Node(c, None, pb, fs)


def children(c: bytes, block: bytes) -> list[bytes]:
    """CIDs this block links to (none for raw leaves)."""
    if cidmod.codec_of(c) == cidmod.RAW:
        return []
    return [link.hash for link in decode_node(block).links]


@dataclass(frozen=True, slots=True)
class Piece:
    """Either inline bytes of this node, or a child to descend into at ``offset``."""

    offset: int  # file offset where this piece starts
    length: int
    data: bytes | None = None
    child: bytes | None = None


def file_pieces(node: Node, start: int = 0, end: int | None = None) -> list[Piece]:
    """Parts of a file node that overlap ``[start, end)`` (offsets relative to the node).

    Uses ``blocksizes`` to skip children outside the range, so a Range request
    reads only the blocks it needs.
    """
    if node.kind != "file":
        raise UnsupportedDagError(f"{cidmod.to_str(node.cid)} is a {node.kind}, not a file")
    size = node.size
    end = size if end is None else min(end, size)
    out: list[Piece] = []
    if start >= end:
        return out
    if node.raw is not None:
        return [Piece(start, end - start, node.raw[start:end])]
    assert node.fs is not None and node.pb is not None
    inline = node.fs.data or b""
    pos = 0
    if inline:
        if start < len(inline):
            seg = inline[start:min(end, len(inline))]
            out.append(Piece(start, len(seg), seg))
        pos = len(inline)
    for link, bs in zip(node.pb.links, node.fs.blocksizes, strict=True):
        lo, hi = pos, pos + bs
        if hi > start and lo < end:
            out.append(Piece(lo, bs, None, link.hash))
        pos = hi
        if pos >= end:
            break
    return out


def dir_entries(node: Node) -> list[tuple[str, bytes, int]]:
    """``(name, cid, tsize)`` of a plain directory.  A HAMT-sharded one spans
    several blocks: see ``webaccel.content.resolve`` (``hamt_children``,
    ``resolve_steps``)."""
    if node.kind == "hamt":
        raise UnsupportedDagError(
            "this directory is HAMT-sharded: its entries span several blocks "
            "(list them with webaccel.content.resolve.hamt_children per shard)")
    if node.kind != "directory":
        raise UnsupportedDagError(f"{cidmod.to_str(node.cid)} is not a directory")
    assert node.pb is not None
    return [(link.name or "", link.hash, link.tsize or 0) for link in node.pb.links]


def dir_lookup(node: Node, name: str) -> bytes | None:
    for n, c, _ in dir_entries(node):
        if n == name:
            return c
    return None
