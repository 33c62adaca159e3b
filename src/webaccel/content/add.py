"""Adding files and folders: the I/O around :mod:`webaccel.content.importer`.

``add_path`` reads a file in chunk-sized pieces (``readinto`` one reusable
buffer, so memory stays flat for multi-GB files) and either only hashes or
puts each block into a :class:`~webaccel.content.store.BlockStore`.  Folders
follow ``ipfs add -r``: entries sorted by name, hidden entries (dot files)
skipped like Kubo without ``--hidden``, symlinks stored as UnixFS symlinks
(not followed), empty folders kept.
"""
from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING

from multiformats import CID

from webaccel.content import cid as cidmod
from webaccel.content.importer import (
    Entry,
    FileBuilder,
    Profile,
    build_directory,
    build_symlink,
    get_profile,
)

if TYPE_CHECKING:
    from webaccel.content.store import BlockStore

Sink = Callable[[bytes, bytes], None]


def _read_chunks(path: Path, size: int) -> Iterator[bytes]:
    with open(path, "rb", buffering=0) as f:
        while True:
            chunk = f.read(size)
            if not chunk:
                return
            # a regular file gives full chunks until EOF; a pipe may not, so top up
            while len(chunk) < size:
                more = f.read(size - len(chunk))
                if not more:
                    break
                chunk += more
            yield chunk


def add_file(path: Path, profile: str | Profile, sink: Sink | None,
             progress: Callable[[int], None] | None = None) -> Entry:
    p = get_profile(profile)
    b = FileBuilder(p)
    for chunk in _read_chunks(path, p.chunk_size):
        for c, block in b.push(chunk):
            if sink is not None:
                sink(c, block)
        if progress is not None:
            progress(len(chunk))
    for c, block in b.finish():
        if sink is not None:
            sink(c, block)
    assert b.root is not None
    return b.root


def add_tree(path: Path, profile: str | Profile, sink: Sink | None, *, hidden: bool = False,
             progress: Callable[[int], None] | None = None) -> Entry:
    """Add a file, symlink or folder (recursively); returns the root entry."""
    if path.is_symlink():
        entry, (c, block) = build_symlink(os.readlink(path), profile)
        if sink is not None:
            sink(c, block)
        return entry
    if path.is_file():
        return add_file(path, profile, sink, progress)
    if not path.is_dir():
        raise FileNotFoundError(f"{path} is not a file or folder")
    children: list[tuple[str, Entry]] = []
    for child in sorted(path.iterdir(), key=lambda q: q.name.encode()):
        if not hidden and child.name.startswith("."):
            continue
        children.append((child.name, add_tree(child, profile, sink, hidden=hidden,
                                              progress=progress)))
    entry, (c, block) = build_directory(children, profile)
    if sink is not None:
        sink(c, block)
    return entry


def add_path(path: str | os.PathLike[str], profile: str | Profile = "kubo-v0",
             store: BlockStore | None = None, only_hash: bool = False, *,
             recursive: bool = True, hidden: bool = False, pin: bool = False,
             progress: Callable[[int], None] | None = None) -> CID:
    """CID of ``path`` as ``ipfs add`` (profile flags) would print it.

    Unless ``only_hash``, every block goes into ``store`` (the default local
    store when None); ``pin`` pins the root there.
    """
    p = Path(path)
    if p.is_dir() and not recursive:
        raise IsADirectoryError(f"{p} is a folder; add it with -r")
    sink: Sink | None = None
    if not only_hash:
        if store is None:
            from webaccel.content.store import BlockStore

            store = BlockStore.default()
        sink = store.put_trusted
    if store is None or only_hash:
        entry = add_tree(p, profile, sink, hidden=hidden, progress=progress)
        return cidmod.to_cid(entry.cid)
    with store.gc_paused():
        entry = add_tree(p, profile, sink, hidden=hidden, progress=progress)
        if pin:
            store.pin(entry.cid)
    store.enforce_budget()
    return cidmod.to_cid(entry.cid)
