"""Errors of the content layer (CIDs, blocks, DAGs, CAR, gateway, fetcher).

::

    WebAccelError
    ├── BadRequestError                    BAD_REQUEST
    │   ├── InvalidCIDError                the text/bytes are not a CID we can use
    │   ├── DecodeError                    bytes are not valid dag-pb / UnixFS / CAR
    │   ├── UnsupportedFormatError         NOT_ACCEPTABLE: a gateway format/Accept we do not serve
    │   ├── InvalidPathError               NOT_FOUND: a path below a CID does not resolve
    │   ├── AddInputError                  a file, folder or flag ``add`` cannot take
    │   └── NotAFileError                  ``cat`` of a folder or symlink
    ├── NotFoundError                      NOT_FOUND
    │   └── BlockNotFoundError             no tier and no peer has the block
    ├── TimeoutError_                      TIMEOUT
    │   └── FetchTimeoutError              peers did not answer in time
    └── ContentError                       INTERNAL
        ├── CorruptBlockError              BAD_UPSTREAM: bytes do not hash to their CID
        │                                  (never stored, never used)
        ├── UnsupportedDagError            NOT_IMPLEMENTED: valid data we do not handle
        │                                  (or refuse to write)
        └── ReplicationError               a push/pin to a peer or IPFS Cluster failed

Each code's HTTP status comes from the one table, :data:`webaccel.errors.HTTP_ERRORS`
(the gateway answers through :func:`webaccel.content.gateway.error_response`).
"""
from __future__ import annotations

from webaccel.errors import (
    BadRequestError,
    ErrorCode,
    NotAcceptableError,
    NotFoundError,
    TimeoutError_,
    WebAccelError,
)


class ContentError(WebAccelError):
    """Base of content-layer errors that are not the caller's fault."""


class InvalidCIDError(BadRequestError):
    """Not a CID (or a CID with a codec/hash we cannot verify)."""


class DecodeError(BadRequestError):
    """Bytes that should be dag-pb, UnixFS or CAR are malformed or truncated."""


class UnsupportedFormatError(NotAcceptableError):
    """A response format (Accept / ?format=) the gateway does not produce."""


class InvalidPathError(BadRequestError):
    """A path under a root CID names no entry."""

    code = ErrorCode.NOT_FOUND  # the CID is fine; what it names is not there


class AddInputError(BadRequestError):
    """Something ``add`` cannot take: a missing path, a special file inside a
    folder, a chunker or CID version Kubo would refuse."""


class NotAFileError(BadRequestError):
    """Bytes were asked of a folder or symlink (``cat``); ``get`` writes those."""


class BlockNotFoundError(NotFoundError):
    """No tier (memory, disk, peers) has the block."""


class FetchTimeoutError(TimeoutError_):
    """Peers did not deliver a block in time, after retries."""


class CorruptBlockError(ContentError):
    """Bytes from outside that do not hash to the CID they were asked for."""

    code = ErrorCode.BAD_UPSTREAM


class UnsupportedDagError(ContentError):
    """A DAG webaccel does not handle or will not write (unsafe names, symlinks
    leaving the output folder, a hash other than murmur3 in a HAMT)."""

    code = ErrorCode.NOT_IMPLEMENTED


class ReplicationError(ContentError):
    """Pushing blocks to a peer or pinning in IPFS Cluster failed."""
