"""Errors of the content layer (CIDs, blocks, DAGs, CAR, gateway, fetcher).

::

    WebAccelError
    ├── BadRequestError                    BAD_REQUEST
    │   ├── InvalidCIDError                the text/bytes are not a CID we can use
    │   ├── DecodeError                    bytes are not valid dag-pb / UnixFS / CAR
    │   ├── UnsupportedFormatError         a gateway format/Accept we do not serve (HTTP 406)
    │   ├── InvalidPathError               a path below a CID does not resolve (gateway: 404)
    │   ├── AddInputError                  a file, folder or flag ``add`` cannot take
    │   └── NotAFileError                  ``cat`` of a folder or symlink
    ├── NotFoundError                      NOT_FOUND
    │   └── BlockNotFoundError             no tier and no peer has the block
    ├── TimeoutError_                      TIMEOUT
    │   └── FetchTimeoutError              peers did not answer in time
    └── ContentError                       INTERNAL
        ├── CorruptBlockError              bytes do not hash to their CID (never stored, never used)
        ├── UnsupportedDagError            valid data we do not handle (or refuse to write)
        └── ReplicationError               a push/pin to a peer or IPFS Cluster failed

The gateway maps these to HTTP status codes in one place
(:func:`webaccel.content.gateway.error_response`).
"""
from __future__ import annotations

from webaccel.errors import BadRequestError, NotFoundError, TimeoutError_, WebAccelError


class ContentError(WebAccelError):
    """Base of content-layer errors that are not the caller's fault."""


class InvalidCIDError(BadRequestError):
    """Not a CID (or a CID with a codec/hash we cannot verify)."""


class DecodeError(BadRequestError):
    """Bytes that should be dag-pb, UnixFS or CAR are malformed or truncated."""


class UnsupportedFormatError(BadRequestError):
    """A response format (Accept / ?format=) the gateway does not produce."""


class InvalidPathError(BadRequestError):
    """A path under a root CID names no entry."""


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


class UnsupportedDagError(ContentError):
    """A DAG webaccel does not handle or will not write (unsafe names, symlinks
    leaving the output folder, a hash other than murmur3 in a HAMT)."""


class ReplicationError(ContentError):
    """Pushing blocks to a peer or pinning in IPFS Cluster failed."""
