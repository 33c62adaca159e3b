"""CAR v1 framing, streaming both ways (pure, no I/O).

Spec: https://ipld.io/specs/transport/car/carv1/ ::

    varint(len(header)) || dag-cbor {"roots": [CID...], "version": 1}
    then per block: varint(len(cid) + len(data)) || cid || data

The header is DAG-CBOR, encoded and decoded by PyPI ``dag-cbor`` (CIDs as
tag 42 over ``0x00 || binary CID``, map keys in DAG-CBOR order, so "roots"
precedes "version"); the varints are multiformats unsigned varints
(``multiformats.varint``).

:class:`CarReader` is an incremental parser (``feed(bytes)`` -> events) with
hard limits on header and section sizes, so truncated or hostile input ends in
DecodeError, never in a hang or unbounded memory.  It does not verify blocks:
callers do (the store verifies everything that comes from outside).
"""
from __future__ import annotations

from collections.abc import Iterable, Iterator
from dataclasses import dataclass

import dag_cbor
from multiformats import CID, varint

from webaccel.content import cid as cidmod
from webaccel.content.errors import DecodeError, InvalidCIDError

MAX_HEADER = 1 << 20
MAX_SECTION = (4 << 20) + 256  # blocks over 4 MiB are refused by IPFS transports too
CONTENT_TYPE = "application/vnd.ipld.car"


# ------------------------------------------------------------------ writing


def encode_header(roots: Iterable[bytes]) -> bytes:
    header = dag_cbor.encode({"roots": [CID.decode(r) for r in roots], "version": 1})
    return varint.encode(len(header)) + header


def encode_section(c: bytes, data: bytes) -> bytes:
    return varint.encode(len(c) + len(data)) + c + data


def write_car(roots: Iterable[bytes], blocks: Iterable[tuple[bytes, bytes]]) -> Iterator[bytes]:
    """Yield the CAR bytes: header, then one piece per block."""
    yield encode_header(roots)
    for c, data in blocks:
        yield encode_section(c, data)


# ------------------------------------------------------------------ reading


def decode_header(body: bytes) -> list[bytes]:
    try:
        obj = dag_cbor.decode(body)
    except Exception as exc:  # dag-cbor raises its own DAGCBORDecodingError, and ValueError
        raise DecodeError(f"CAR header is not valid DAG-CBOR ({exc.__class__.__name__})") from exc
    if not isinstance(obj, dict):
        raise DecodeError("CAR header is not a map")
    version = obj.get("version")
    if version == 2:
        raise DecodeError("CARv2 is not supported; export CARv1 (ipfs dag export)")
    if version != 1:
        raise DecodeError("CAR header version is not 1")
    roots = obj.get("roots")
    if not isinstance(roots, list) or not all(isinstance(r, CID) for r in roots):
        raise DecodeError("CAR header roots is not a list of CIDs")
    out = []
    for r in roots:
        assert isinstance(r, CID)
        try:
            out.append(cidmod.parse(r))
        except InvalidCIDError as exc:
            raise DecodeError("CAR header root is not a usable CID") from exc
    return out


def _uvarint(buf: bytes | bytearray | memoryview, pos: int, end: int) -> tuple[int, int]:
    try:
        n, size, _rest = varint.decode_raw(bytes(buf[pos:min(end, pos + 9)]))
    except ValueError as exc:
        raise DecodeError(f"bad varint in CAR ({exc})") from exc
    return n, pos + size


def split_cid(buf: bytes | bytearray | memoryview, pos: int, end: int) -> int:
    """End offset of the binary CID starting at ``pos`` (CIDv0 or CIDv1)."""
    if end - pos >= 2 and buf[pos] == 0x12 and buf[pos + 1] == 0x20:
        if end - pos < 34:
            raise DecodeError("truncated CIDv0 in CAR section")
        return pos + 34
    version, p = _uvarint(buf, pos, end)
    if version != 1:
        raise DecodeError("CAR section CID is neither v0 nor v1")
    _codec, p = _uvarint(buf, p, end)
    _hcode, p = _uvarint(buf, p, end)
    dlen, p = _uvarint(buf, p, end)
    if dlen > end - p or dlen > 128:
        raise DecodeError("CAR section CID digest runs past the section")
    return p + dlen


@dataclass(frozen=True, slots=True)
class CarHeader:
    roots: list[bytes]


@dataclass(frozen=True, slots=True)
class CarBlock:
    cid: bytes
    data: bytes


class CarReader:
    """Incremental CAR v1 parser: ``feed()`` bytes as they come, get header/blocks."""

    def __init__(self, *, max_section: int = MAX_SECTION) -> None:
        self._buf = bytearray()
        self._header: CarHeader | None = None
        self._max = max_section

    @property
    def header(self) -> CarHeader | None:
        return self._header

    def _frame(self) -> bytes | None:
        """Next varint-prefixed frame, or None if more bytes are needed."""
        buf = self._buf
        if not buf:
            return None
        if len(buf) < 9 and all(b & 0x80 for b in buf):
            return None  # varint not complete yet
        n, p = _uvarint(buf, 0, len(buf))
        limit = MAX_HEADER if self._header is None else self._max
        if n > limit:
            raise DecodeError(f"CAR frame of {n} bytes is over the {limit}-byte limit")
        if n == 0:
            raise DecodeError("empty CAR frame")
        if len(buf) - p < n:
            return None
        frame = bytes(buf[p : p + n])
        del buf[: p + n]
        return frame

    def feed(self, data: bytes) -> list[CarHeader | CarBlock]:
        self._buf += data
        out: list[CarHeader | CarBlock] = []
        while True:
            frame = self._frame()
            if frame is None:
                return out
            if self._header is None:
                self._header = CarHeader(decode_header(frame))
                out.append(self._header)
                continue
            cend = split_cid(frame, 0, len(frame))
            c = frame[:cend]
            try:
                cidmod.split(c)
            except InvalidCIDError as exc:
                raise DecodeError("CAR section has an unusable CID") from exc
            out.append(CarBlock(c, frame[cend:]))

    def close(self) -> None:
        """Call at end of input: DecodeError if it stopped mid-frame or had no header."""
        if self._buf:
            raise DecodeError("CAR ends in the middle of a section")
        if self._header is None:
            raise DecodeError("CAR has no header")


def read_car(pieces: Iterable[bytes]) -> Iterator[CarHeader | CarBlock]:
    """Parse a CAR from byte pieces (e.g. ``iter(lambda: f.read(1 << 20), b"")``)."""
    r = CarReader()
    for piece in pieces:
        yield from r.feed(piece)
    r.close()
