"""CAR v1 framing, streaming both ways (pure, no I/O).

Spec: https://ipld.io/specs/transport/car/carv1/ ::

    varint(len(header)) || dag-cbor {"roots": [CID...], "version": 1}
    then per block: varint(len(cid) + len(data)) || cid || data

The header's CIDs are CBOR tag 42 over ``0x00 || binary CID`` (DAG-CBOR spec,
https://ipld.io/specs/codecs/dag-cbor/spec/#links); map keys are in DAG-CBOR
order (shorter first), so "roots" precedes "version".

:class:`CarReader` is an incremental parser (``feed(bytes)`` -> events) with
hard limits on header and section sizes, so truncated or hostile input ends in
DecodeError, never in a hang or unbounded memory.  It does not verify blocks:
callers do (the store verifies everything that comes from outside).
"""
from __future__ import annotations

from collections.abc import Iterable, Iterator
from dataclasses import dataclass

from webaccel.content import cid as cidmod
from webaccel.content.errors import DecodeError, InvalidCIDError
from webaccel.content.pb import read_varint, varint

MAX_HEADER = 1 << 20
MAX_SECTION = (4 << 20) + 256  # blocks over 4 MiB are refused by IPFS transports too
CONTENT_TYPE = "application/vnd.ipld.car"


# ------------------------------------------------------------------ writing


def _cbor_head(major: int, n: int) -> bytes:
    if n < 24:
        return bytes((major << 5 | n,))
    for extra, size in ((24, 1), (25, 2), (26, 4), (27, 8)):
        if n < 1 << (8 * size):
            return bytes((major << 5 | extra,)) + n.to_bytes(size, "big")
    raise ValueError("CBOR length too large")


def encode_header(roots: Iterable[bytes]) -> bytes:
    roots = list(roots)
    body = bytearray(_cbor_head(5, 2))
    body += _cbor_head(3, 5) + b"roots" + _cbor_head(4, len(roots))
    for r in roots:
        link = b"\x00" + r
        body += b"\xd8\x2a" + _cbor_head(2, len(link)) + link
    body += _cbor_head(3, 7) + b"version" + _cbor_head(0, 1)
    return varint(len(body)) + bytes(body)


def encode_section(c: bytes, data: bytes) -> bytes:
    return varint(len(c) + len(data)) + c + data


def write_car(roots: Iterable[bytes], blocks: Iterable[tuple[bytes, bytes]]) -> Iterator[bytes]:
    """Yield the CAR bytes: header, then one piece per block."""
    yield encode_header(roots)
    for c, data in blocks:
        yield encode_section(c, data)


# ------------------------------------------------------------------ reading


class _Cbor:
    """Just enough DAG-CBOR to read a CAR header (bounded depth and sizes)."""

    def __init__(self, buf: bytes) -> None:
        self.buf, self.pos = buf, 0

    def _take(self, n: int) -> bytes:
        if n > len(self.buf) - self.pos:
            raise DecodeError("truncated CBOR in CAR header")
        out = self.buf[self.pos : self.pos + n]
        self.pos += n
        return out

    def _arg(self, info: int) -> int:
        if info < 24:
            return info
        sizes = {24: 1, 25: 2, 26: 4, 27: 8}
        if info not in sizes:
            raise DecodeError("indefinite or reserved CBOR length in CAR header")
        return int.from_bytes(self._take(sizes[info]), "big")

    def item(self, depth: int = 0) -> object:
        if depth > 16:
            raise DecodeError("CAR header nests too deeply")
        ib = self._take(1)[0]
        major, info = ib >> 5, ib & 31
        if major == 7:
            simple = {20: False, 21: True, 22: None}
            if info in simple:
                return simple[info]
            raise DecodeError("unsupported CBOR simple value in CAR header")
        n = self._arg(info)
        if major == 0:
            return n
        if major == 1:
            return -1 - n
        if major == 2:
            return self._take(n)
        if major == 3:
            try:
                return self._take(n).decode("utf-8")
            except UnicodeDecodeError as exc:
                raise DecodeError("CBOR text is not UTF-8") from exc
        if major == 4:
            if n > len(self.buf):
                raise DecodeError("CBOR array longer than its input")
            return [self.item(depth + 1) for _ in range(n)]
        if major == 5:
            if n > len(self.buf):
                raise DecodeError("CBOR map longer than its input")
            out = {}
            for _ in range(n):
                k = self.item(depth + 1)
                if not isinstance(k, str):
                    raise DecodeError("CBOR map key is not a string")
                out[k] = self.item(depth + 1)
            return out
        if major == 6:
            inner = self.item(depth + 1)
            if n != 42 or not isinstance(inner, bytes) or not inner.startswith(b"\x00"):
                raise DecodeError("unexpected CBOR tag in CAR header")
            return _Link(inner[1:])
        raise DecodeError("bad CBOR major type")


@dataclass(frozen=True, slots=True)
class _Link:
    cid: bytes


def decode_header(body: bytes) -> list[bytes]:
    parser = _Cbor(body)
    obj = parser.item()
    if parser.pos != len(body):
        raise DecodeError("trailing bytes in CAR header")
    if not isinstance(obj, dict):
        raise DecodeError("CAR header is not a map")
    version = obj.get("version")
    if version == 2:
        raise DecodeError("CARv2 is not supported; export CARv1 (ipfs dag export)")
    if version != 1:
        raise DecodeError("CAR header version is not 1")
    roots = obj.get("roots")
    if not isinstance(roots, list) or not all(isinstance(r, _Link) for r in roots):
        raise DecodeError("CAR header roots is not a list of CIDs")
    out = []
    for r in roots:
        try:
            out.append(cidmod.parse(r.cid))
        except InvalidCIDError as exc:
            raise DecodeError("CAR header root is not a usable CID") from exc
    return out


def split_cid(buf: bytes | bytearray | memoryview, pos: int, end: int) -> int:
    """End offset of the binary CID starting at ``pos`` (CIDv0 or CIDv1)."""
    if end - pos >= 2 and buf[pos] == 0x12 and buf[pos + 1] == 0x20:
        if end - pos < 34:
            raise DecodeError("truncated CIDv0 in CAR section")
        return pos + 34
    version, p = read_varint(buf, pos, end)
    if version != 1:
        raise DecodeError("CAR section CID is neither v0 nor v1")
    _codec, p = read_varint(buf, p, end)
    _hcode, p = read_varint(buf, p, end)
    dlen, p = read_varint(buf, p, end)
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
        try:
            n, p = read_varint(buf, 0, min(len(buf), 10))
        except DecodeError:
            if len(buf) < 10 and all(b & 0x80 for b in buf):
                return None  # varint not complete yet
            raise
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
