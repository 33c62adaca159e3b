"""dag-pb and UnixFS protobuf, by hand (pure, no I/O).

Follows the specs, byte for byte, because CIDs depend on it:

* dag-pb: https://ipld.io/specs/codecs/dag-pb/spec/ ::

      message PBLink { optional bytes Hash = 1; optional string Name = 2;
                       optional uint64 Tsize = 3; }
      message PBNode { repeated PBLink Links = 2; optional bytes Data = 1; }

  "Links" are written before "Data" (the spec's canonical order, which Kubo
  and the JS stack use) and links keep their fields in order 1, 2, 3.  The
  decoder is strict as the spec asks: fields out of order, unknown fields,
  duplicated fields, wrong wire types or a link without Hash are DecodeError.

* UnixFS: https://github.com/ipfs/specs/blob/main/UNIXFS.md ::

      message Data { required DataType Type = 1; optional bytes Data = 2;
                     optional uint64 filesize = 3; repeated uint64 blocksizes = 4;
                     optional uint64 hashType = 5; optional uint64 fanout = 6;
                     optional uint32 mode = 7; optional UnixTime mtime = 8; }

  blocksizes is proto2 ``repeated`` (not packed) on the wire; the decoder also
  accepts the packed form.  Unknown UnixFS fields are skipped (forward
  compatible), malformed ones are DecodeError.

Every decoder either returns a value or raises DecodeError: no other
exception, no unbounded loop (each step consumes at least one byte).
"""
from __future__ import annotations

from dataclasses import dataclass, field
from enum import IntEnum

from webaccel.content.errors import DecodeError

# Protobuf varints, not multiformats ones: protobuf's uint64 fields take up to
# 10 bytes (values to 2**64 - 1), while multiformats.varint stops at 9 bytes
# (2**63 - 1) by its spec, so dag-pb/UnixFS keep this codec; CIDs and CAR use
# multiformats.varint.
MAX_VARINT_BYTES = 10


def varint(n: int) -> bytes:
    if n < 0:
        raise ValueError("varint of a negative number")
    if n < 0x80:
        return bytes((n,))
    out = bytearray()
    while n >= 0x80:
        out.append((n & 0x7F) | 0x80)
        n >>= 7
    out.append(n)
    return bytes(out)


Buf = bytes | bytearray | memoryview


def read_varint(buf: Buf, pos: int, end: int | None = None) -> tuple[int, int]:
    """``(value, new_pos)``; DecodeError if truncated, over 64 bits or over-long."""
    end = len(buf) if end is None else end
    result = 0
    shift = 0
    for i in range(MAX_VARINT_BYTES):
        if pos >= end:
            raise DecodeError("truncated varint")
        b = buf[pos]
        pos += 1
        result |= (b & 0x7F) << shift
        if not b & 0x80:
            if i > 0 and b == 0:
                raise DecodeError("varint is not minimally encoded")
            if result >= 1 << 64:
                raise DecodeError("varint over 64 bits")
            return result, pos
        shift += 7
    raise DecodeError("varint longer than 10 bytes")


def _key(fieldno: int, wire: int) -> bytes:
    return varint((fieldno << 3) | wire)


def _bytes_field(fieldno: int, value: bytes) -> bytes:
    return _key(fieldno, 2) + varint(len(value)) + value


# ---------------------------------------------------------------- dag-pb


@dataclass(frozen=True, slots=True)
class PBLink:
    hash: bytes  # binary CID
    name: str | None = ""
    tsize: int | None = None


@dataclass(frozen=True, slots=True)
class PBNode:
    data: bytes | None = None
    links: tuple[PBLink, ...] = ()


def encode_link(link: PBLink) -> bytes:
    body = _bytes_field(1, link.hash)
    if link.name is not None:
        body += _bytes_field(2, link.name.encode("utf-8"))
    if link.tsize is not None:
        body += _key(3, 0) + varint(link.tsize)
    return body


def encode_node(node: PBNode) -> bytes:
    parts = []
    for link in node.links:
        parts.append(_bytes_field(2, encode_link(link)))
    if node.data is not None:
        parts.append(_bytes_field(1, node.data))
    return b"".join(parts)


def _read_len(buf: bytes | bytearray | memoryview, pos: int, end: int) -> tuple[int, int]:
    n, pos = read_varint(buf, pos, end)
    if n > end - pos:
        raise DecodeError("length-delimited field runs past the end")
    return pos, pos + n


def decode_link(buf: bytes | bytearray | memoryview, pos: int, end: int) -> PBLink:
    last = 0
    hash_: bytes | None = None
    name: str | None = None
    tsize: int | None = None
    while pos < end:
        key, pos = read_varint(buf, pos, end)
        fieldno, wire = key >> 3, key & 7
        if fieldno <= last:
            raise DecodeError("dag-pb link fields out of order or repeated")
        last = fieldno
        if fieldno == 1 and wire == 2:
            s, pos = _read_len(buf, pos, end)
            hash_ = bytes(buf[s:pos])
        elif fieldno == 2 and wire == 2:
            s, pos = _read_len(buf, pos, end)
            try:
                name = bytes(buf[s:pos]).decode("utf-8")
            except UnicodeDecodeError as exc:
                raise DecodeError("dag-pb link name is not UTF-8") from exc
        elif fieldno == 3 and wire == 0:
            tsize, pos = read_varint(buf, pos, end)
        else:
            raise DecodeError(f"unexpected dag-pb link field {fieldno} (wire type {wire})")
    if hash_ is None:
        raise DecodeError("dag-pb link without Hash")
    return PBLink(hash_, name, tsize)


def decode_node(buf: bytes | bytearray | memoryview) -> PBNode:
    pos, end = 0, len(buf)
    links: list[PBLink] = []
    data: bytes | None = None
    while pos < end:
        key, pos = read_varint(buf, pos, end)
        fieldno, wire = key >> 3, key & 7
        if wire != 2 or fieldno not in (1, 2):
            raise DecodeError(f"unexpected dag-pb node field {fieldno} (wire type {wire})")
        s, pos = _read_len(buf, pos, end)
        if fieldno == 2:
            if data is not None:
                raise DecodeError("dag-pb Links after Data")
            links.append(decode_link(buf, s, pos))
        else:
            if data is not None:
                raise DecodeError("dag-pb Data field repeated")
            data = bytes(buf[s:pos])
    return PBNode(data, tuple(links))


# ---------------------------------------------------------------- UnixFS


class DataType(IntEnum):
    RAW = 0
    DIRECTORY = 1
    FILE = 2
    METADATA = 3
    SYMLINK = 4
    HAMT_SHARD = 5


@dataclass(frozen=True, slots=True)
class UnixFSData:
    type: DataType
    data: bytes | None = None
    filesize: int | None = None
    blocksizes: tuple[int, ...] = field(default=())
    hash_type: int | None = None
    fanout: int | None = None
    mode: int | None = None

    @property
    def size(self) -> int:
        """Bytes of file content under this node."""
        if self.filesize is not None:
            return self.filesize
        return len(self.data or b"")


def encode_unixfs(d: UnixFSData) -> bytes:
    out = bytearray(_key(1, 0) + varint(int(d.type)))
    if d.data is not None:
        out += _bytes_field(2, d.data)
    if d.filesize is not None:
        out += _key(3, 0) + varint(d.filesize)
    key4 = _key(4, 0)
    for bs in d.blocksizes:
        out += key4 + varint(bs)
    if d.hash_type is not None:
        out += _key(5, 0) + varint(d.hash_type)
    if d.fanout is not None:
        out += _key(6, 0) + varint(d.fanout)
    if d.mode is not None:
        out += _key(7, 0) + varint(d.mode)
    return bytes(out)


def encode_file_leaf(chunk: bytes) -> bytes:
    """``encode_node(PBNode(encode_unixfs(File, data=chunk, filesize=len)))`` with one copy.

    The importer's hot path for dag-pb leaves (kubo-v0): the generic encoders
    copy a 256 KiB chunk four times, this builds the same bytes around it once.
    """
    n = len(chunk)
    if n == 0:
        return encode_node(PBNode(data=encode_unixfs(UnixFSData(DataType.FILE, None, 0))))
    inner_len = 2 + 1 + len(varint(n)) + n + 1 + len(varint(n))
    prefix = b"\x0a" + varint(inner_len) + b"\x08\x02\x12" + varint(n)
    return b"".join((prefix, chunk, b"\x18", varint(n)))


def _skip(buf: bytes | bytearray | memoryview, pos: int, end: int, wire: int) -> int:
    if wire == 0:
        return read_varint(buf, pos, end)[1]
    if wire == 1:
        if end - pos < 8:
            raise DecodeError("truncated fixed64")
        return pos + 8
    if wire == 2:
        return _read_len(buf, pos, end)[1]
    if wire == 5:
        if end - pos < 4:
            raise DecodeError("truncated fixed32")
        return pos + 4
    raise DecodeError(f"unsupported protobuf wire type {wire}")


def decode_unixfs(buf: bytes | bytearray | memoryview) -> UnixFSData:
    pos, end = 0, len(buf)
    type_: int | None = None
    data: bytes | None = None
    filesize = hash_type = fanout = mode = None
    blocksizes: list[int] = []
    while pos < end:
        key, pos = read_varint(buf, pos, end)
        fieldno, wire = key >> 3, key & 7
        if fieldno == 0:
            raise DecodeError("protobuf field number 0")
        if fieldno == 1 and wire == 0:
            type_, pos = read_varint(buf, pos, end)
        elif fieldno == 2 and wire == 2:
            s, pos = _read_len(buf, pos, end)
            data = bytes(buf[s:pos])
        elif fieldno == 3 and wire == 0:
            filesize, pos = read_varint(buf, pos, end)
        elif fieldno == 4 and wire == 0:
            v, pos = read_varint(buf, pos, end)
            blocksizes.append(v)
        elif fieldno == 4 and wire == 2:  # packed
            s, pos = _read_len(buf, pos, end)
            while s < pos:
                v, s = read_varint(buf, s, pos)
                blocksizes.append(v)
        elif fieldno == 5 and wire == 0:
            hash_type, pos = read_varint(buf, pos, end)
        elif fieldno == 6 and wire == 0:
            fanout, pos = read_varint(buf, pos, end)
        elif fieldno == 7 and wire == 0:
            mode, pos = read_varint(buf, pos, end)
        elif fieldno in (1, 2, 3, 4, 5, 6, 7):
            raise DecodeError(f"UnixFS field {fieldno} has wire type {wire}")
        else:
            pos = _skip(buf, pos, end, wire)
    if type_ is None:
        raise DecodeError("UnixFS Data without Type")
    try:
        dtype = DataType(type_)
    except ValueError as exc:
        raise DecodeError(f"unknown UnixFS type {type_}") from exc
    return UnixFSData(dtype, data, filesize, tuple(blocksizes), hash_type, fanout, mode)
