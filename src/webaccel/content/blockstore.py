"""The local block tiers: a byte-bounded memory LRU over a disk blockstore.

Disk layout (under ``root``)::

    blocks/<2 hex>/<multihash hex>   one file per block, keyed by multihash
    tmp/                             in-flight writes
    pins/<cid>                       one file per recursive pin

Blocks are keyed by multihash like Kubo's flatfs, so the raw and dag-pb forms
of the same bytes share one file.  Writes are atomic: data goes to ``tmp/``,
is fsynced, then ``os.replace``d into place, so a crash mid-write leaves at
most a stray temp file (removed on open), never a truncated block under a
real name.  Reads touch the file's mtime, which garbage collection uses as
"last used".
"""
from __future__ import annotations

import contextlib
import os
import secrets
import threading
from collections import OrderedDict
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from webaccel.content import cid as cidmod
from webaccel.content.pb import read_varint


def mh_of(c: bytes) -> bytes:
    """The multihash part of a binary CID (a CIDv0 is all multihash)."""
    if cidmod.version_of(c) == 0:
        return c
    _codec, pos = read_varint(c, 1)  # skip version byte 0x01, then the codec varint
    return c[pos:]


class MemoryLRU:
    """Least-recently-used blocks kept in memory, bounded by total bytes."""

    def __init__(self, max_bytes: int = 128 << 20) -> None:
        self.max_bytes = max_bytes
        self.nbytes = 0
        self._d: OrderedDict[bytes, bytes] = OrderedDict()
        self._lock = threading.Lock()

    def get(self, key: bytes) -> bytes | None:
        with self._lock:
            data = self._d.get(key)
            if data is not None:
                self._d.move_to_end(key)
            return data

    def put(self, key: bytes, data: bytes) -> None:
        if len(data) > self.max_bytes:
            return
        with self._lock:
            old = self._d.pop(key, None)
            if old is not None:
                self.nbytes -= len(old)
            self._d[key] = data
            self.nbytes += len(data)
            while self.nbytes > self.max_bytes:
                _, evicted = self._d.popitem(last=False)
                self.nbytes -= len(evicted)

    def discard(self, key: bytes) -> None:
        with self._lock:
            old = self._d.pop(key, None)
            if old is not None:
                self.nbytes -= len(old)

    def __contains__(self, key: bytes) -> bool:
        return key in self._d

    def __len__(self) -> int:
        return len(self._d)


@dataclass(frozen=True, slots=True)
class DiskEntry:
    mh: bytes
    size: int
    mtime: float


class DiskBlockstore:
    def __init__(self, root: str | os.PathLike[str]) -> None:
        self.root = Path(root)
        self.blocks = self.root / "blocks"
        self.tmp = self.root / "tmp"
        self.pins_dir = self.root / "pins"
        for d in (self.blocks, self.tmp, self.pins_dir):
            d.mkdir(parents=True, exist_ok=True)
        for stray in self.tmp.iterdir():  # left by a crash mid-write
            with contextlib.suppress(OSError):
                stray.unlink()
        self._nbytes: int | None = None
        self._lock = threading.Lock()

    def path_of(self, mh: bytes) -> Path:
        h = mh.hex()
        return self.blocks / h[-3:-1] / h

    def get(self, mh: bytes) -> bytes | None:
        p = self.path_of(mh)
        try:
            with open(p, "rb") as f:
                data = f.read()
        except FileNotFoundError:
            return None
        with contextlib.suppress(OSError):
            os.utime(p)
        return data

    def has(self, mh: bytes) -> bool:
        return self.path_of(mh).exists()

    def size_of(self, mh: bytes) -> int | None:
        try:
            return self.path_of(mh).stat().st_size
        except FileNotFoundError:
            return None

    def put(self, mh: bytes, data: bytes, *, fsync: bool = True) -> bool:
        """Store atomically; False if it was already there."""
        final = self.path_of(mh)
        if final.exists():
            return False
        final.parent.mkdir(exist_ok=True)
        tmp = self.tmp / f"{mh.hex()[-16:]}.{secrets.token_hex(6)}"
        try:
            with open(tmp, "wb") as f:
                f.write(data)
                if fsync:
                    f.flush()
                    os.fsync(f.fileno())
            os.replace(tmp, final)
        except BaseException:
            with contextlib.suppress(OSError):
                tmp.unlink()
            raise
        with self._lock:
            if self._nbytes is not None:
                self._nbytes += len(data)
        return True

    def delete(self, mh: bytes) -> int:
        p = self.path_of(mh)
        try:
            size = p.stat().st_size
            p.unlink()
        except FileNotFoundError:
            return 0
        with self._lock:
            if self._nbytes is not None:
                self._nbytes -= size
        return size

    def entries(self) -> Iterator[DiskEntry]:
        for shard in self.blocks.iterdir():
            if not shard.is_dir():
                continue
            for f in shard.iterdir():
                try:
                    st = f.stat()
                    yield DiskEntry(bytes.fromhex(f.name), st.st_size, st.st_mtime)
                except (OSError, ValueError):
                    continue

    @property
    def nbytes(self) -> int:
        with self._lock:
            if self._nbytes is None:
                self._nbytes = sum(e.size for e in self.entries())
            return self._nbytes
