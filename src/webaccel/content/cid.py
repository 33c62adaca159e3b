"""CIDs as bytes in the hot path, ``multiformats.CID`` at the edges.

Inside the content layer a CID is its binary form (``bytes``): CIDv0 is the bare
sha2-256 multihash (34 bytes), CIDv1 is ``0x01 || varint(codec) || multihash``
(https://github.com/multiformats/cid).  Building a ``multiformats.CID`` costs
about as much as hashing a 256 KiB chunk, so the importer and the stores keep
bytes and convert only to parse or print (``parse``, ``to_str``, both cached:
the gateway and the fetcher print and parse the same CIDs over and over).

We only verify sha2-256 and identity multihashes and the dag-pb/raw codecs:
that is what UnixFS file DAGs use, and a CID we cannot verify is refused.
"""
from __future__ import annotations

import functools
import hashlib

from multiformats import CID, varint

from webaccel.content.errors import CorruptBlockError, InvalidCIDError

DAG_PB = 0x70
RAW = 0x55
SHA2_256 = 0x12
IDENTITY = 0x00
_CODECS = {DAG_PB: "dag-pb", RAW: "raw"}

CIDLike = CID | str | bytes


# The bytes in front of a digest: multicodec varints from ``multiformats``,
# computed once (building a ``CID`` object per block would cost as much as
# hashing it).  CIDv1 = 0x01 || varint(codec) || varint(hash) || varint(len).
_SHA256_PREFIX = varint.encode(SHA2_256) + varint.encode(32)
_V1_PREFIX = {codec: varint.encode(1) + varint.encode(codec) + _SHA256_PREFIX
              for codec in _CODECS}


def make(data: bytes, codec: int, version: int) -> bytes:
    """Binary CID of ``data`` (sha2-256) for ``codec`` and CID ``version``."""
    digest = hashlib.sha256(data).digest()
    if version == 0:
        if codec != DAG_PB:
            raise InvalidCIDError("CIDv0 is dag-pb only; use CIDv1 for raw blocks")
        return _SHA256_PREFIX + digest
    return _V1_PREFIX[codec] + digest


def split(raw: bytes) -> tuple[int, int, int, bytes]:
    """``(version, codec, hash code, digest)`` of a binary CID; InvalidCIDError if unusable."""
    if len(raw) == 34 and raw[0] == 0x12 and raw[1] == 0x20:
        return 0, DAG_PB, SHA2_256, raw[2:]
    try:
        c = CID.decode(raw)
    except Exception as exc:  # multiformats raises several ValueError subclasses
        raise InvalidCIDError(f"not a binary CID ({exc.__class__.__name__})") from exc
    return _check(c)


def _check(c: CID) -> tuple[int, int, int, bytes]:
    try:
        return _check_fields(c)
    except InvalidCIDError:
        raise
    except Exception as exc:  # multiformats validates lazily (e.g. digest length)
        raise InvalidCIDError(f"malformed CID ({exc.__class__.__name__})") from exc


def _check_fields(c: CID) -> tuple[int, int, int, bytes]:
    codec = c.codec.code
    if codec not in _CODECS:
        raise InvalidCIDError(
            f"CID codec {c.codec.name} is not served here; only dag-pb and raw (UnixFS) are"
        )
    hcode = c.hashfun.code
    if hcode not in (SHA2_256, IDENTITY):
        raise InvalidCIDError(f"CID hash {c.hashfun.name} cannot be verified here; use sha2-256")
    if hcode == SHA2_256 and len(c.raw_digest) != 32:
        raise InvalidCIDError("sha2-256 CID with a digest that is not 32 bytes")
    return c.version, codec, hcode, c.raw_digest


@functools.lru_cache(maxsize=16384)
def _parse_text(value: str) -> bytes:
    try:
        c = CID.decode(value)
    except Exception as exc:
        raise InvalidCIDError("not a valid CID; expected bafy... (CIDv1) or Qm... (CIDv0)") from exc
    _check(c)
    return bytes(c)


def parse(value: CIDLike) -> bytes:
    """Binary CID from a string (any multibase), a ``CID`` or binary bytes.

    Raises InvalidCIDError (HTTP 400) for anything else; never echoes the input.
    """
    if isinstance(value, bytes):
        split(value)
        return value
    if isinstance(value, CID):
        _check(value)
        return bytes(value)
    if not isinstance(value, str) or not value or len(value) > 512:
        raise InvalidCIDError("expected a CID string such as bafy... or Qm...")
    return _parse_text(value.strip())


def to_cid(raw: bytes) -> CID:
    c = CID.decode(raw)
    if c.version == 1 and c.base.name != "base32":
        c = c.set(base="base32")
    return c


@functools.lru_cache(maxsize=16384)
def to_str(raw: bytes) -> str:
    """Canonical text: base58btc for CIDv0, base32 for CIDv1 (what Kubo prints)."""
    return str(to_cid(raw))


def codec_of(raw: bytes) -> int:
    return split(raw)[1]


def version_of(raw: bytes) -> int:
    return 0 if len(raw) == 34 and raw[0] == 0x12 else 1


def to_v1(raw: bytes) -> bytes:
    """CIDv1 of the same content (a CIDv0 becomes the dag-pb CIDv1)."""
    if version_of(raw) == 0:
        return b"\x01\x70" + raw
    return raw


def verify(raw: bytes, data: bytes) -> None:
    """Raise CorruptBlockError unless ``data`` hashes to the CID ``raw``."""
    _version, _codec, hcode, digest = split(raw)
    ok = digest == data if hcode == IDENTITY else hashlib.sha256(data).digest() == digest
    if not ok:
        raise CorruptBlockError(
            f"block does not match its CID {to_str(raw)}; it was dropped",
            details={"cid": to_str(raw)},
        )


def is_valid(raw: bytes, data: bytes) -> bool:
    try:
        verify(raw, data)
    except CorruptBlockError:
        return False
    return True
