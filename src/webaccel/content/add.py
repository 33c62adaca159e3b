"""Adding files and folders: the I/O around :mod:`webaccel.content.importer`.

``add_path`` reads a file in chunk-sized pieces (memory stays flat for
multi-GB files) and either only hashes or puts each block into a
:class:`~webaccel.content.store.BlockStore`.  ``add_paths`` is ``ipfs add``
with several arguments, ``-w`` and stdin.  Folders follow ``ipfs add -r``
(Kubo 0.22, ``core/coreunix/add.go``): entries sorted by name, hidden
entries (dot files) skipped without ``hidden``, symlinks stored as UnixFS
symlinks and never followed (also a symlink given as the argument itself),
empty folders kept, folders past the sharding threshold built as HAMTs.

Each added file, symlink and folder is reported (``on_added``) in Kubo's
order: files and symlinks as they are added, then the folders, children
before parents (the order of ``ipfs add``'s ``added <cid> <name>`` lines).
"""
from __future__ import annotations

import os
import stat
import sys
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, TYPE_CHECKING

from multiformats import CID

from webaccel.content import cid as cidmod
from webaccel.content.errors import AddInputError
from webaccel.content.importer import (
    Entry,
    FileBuilder,
    Profile,
    build_directory_blocks,
    build_symlink,
    get_profile,
    hamt_hash,
    needs_sharding,
)

if TYPE_CHECKING:
    from webaccel.content.store import BlockStore

Sink = Callable[[bytes, bytes], None]
STDIN = "-"


@dataclass(frozen=True, slots=True)
class Added:
    """One ``added <cid> <name>`` line: ``name`` is relative to what was asked
    for (``dir/sub/file``; ``""`` for the ``-w`` wrapper)."""

    name: str
    entry: Entry
    kind: str  # "file" | "symlink" | "directory"

    @property
    def cid_str(self) -> str:
        return self.entry.cid_str


OnAdded = Callable[[Added], None]


@dataclass(slots=True)
class _Dir:
    name: str
    entry: Entry
    sharded: bool
    subdirs: list[tuple[str, _Dir]] = field(default_factory=list)


def _read_chunks(f: IO[bytes], size: int) -> Iterator[bytes]:
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


def add_stream(f: IO[bytes], profile: str | Profile, sink: Sink | None,
               progress: Callable[[int], None] | None = None) -> Entry:
    p = get_profile(profile)
    b = FileBuilder(p)
    for chunk in _read_chunks(f, p.chunk_size):
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


def add_file(path: Path, profile: str | Profile, sink: Sink | None,
             progress: Callable[[int], None] | None = None) -> Entry:
    with open(path, "rb", buffering=0) as f:
        return add_stream(f, profile, sink, progress)  # type: ignore[arg-type]


def _kind_name(mode: int) -> str:
    for test, name in ((stat.S_ISFIFO, "named pipe"), (stat.S_ISSOCK, "socket"),
                       (stat.S_ISCHR, "character device"), (stat.S_ISBLK, "block device")):
        if test(mode):
            return name
    return "special file"


def _add(path: Path, name: str, p: Profile, sink: Sink | None, *, hidden: bool,
         progress: Callable[[int], None] | None, on_added: OnAdded | None,
         top: bool) -> tuple[Entry, _Dir | None]:
    st = path.lstat()
    if stat.S_ISLNK(st.st_mode):
        entry, (c, block) = build_symlink(os.readlink(path), p)
        if sink is not None:
            sink(c, block)
        if on_added is not None:
            on_added(Added(name, entry, "symlink"))
        return entry, None
    if stat.S_ISDIR(st.st_mode):
        children: list[tuple[str, Entry]] = []
        subdirs: list[tuple[str, _Dir]] = []
        for child in sorted(os.scandir(path), key=lambda e: os.fsencode(e.name)):
            if not hidden and child.name.startswith("."):
                continue
            ce, cd = _add(Path(child.path), f"{name}/{child.name}" if name else child.name, p,
                          sink, hidden=hidden, progress=progress, on_added=on_added, top=False)
            children.append((child.name, ce))
            if cd is not None:
                subdirs.append((child.name, cd))
        entry, blocks = build_directory_blocks(children, p)
        if sink is not None:
            for c, block in blocks:
                sink(c, block)
        return entry, _Dir(name, entry, needs_sharding(sorted(children), p), subdirs)
    if not stat.S_ISREG(st.st_mode) and not top:
        raise AddInputError(
            f"unrecognized file type for {path}: {_kind_name(st.st_mode)}; "
            "move it out of the folder or add it on its own"
        )
    # a regular file, or a pipe/device named on the command line (read as a stream)
    entry = add_file(path, p, sink, progress)
    if on_added is not None:
        on_added(Added(name, entry, "file"))
    return entry, None


def _emit_dirs(d: _Dir, on_added: OnAdded) -> None:
    """Kubo's ``outputDirs``: sub-folders first (in the folder's link order:
    by name, or for a HAMT in hash order), then the folder itself."""
    subs = sorted(d.subdirs, key=(lambda s: hamt_hash(s[0])) if d.sharded
                  else (lambda s: s[0].encode("utf-8")))
    for _n, sub in subs:
        _emit_dirs(sub, on_added)
    on_added(Added(d.name, d.entry, "directory"))


def add_tree(path: Path, profile: str | Profile, sink: Sink | None, *, hidden: bool = False,
             progress: Callable[[int], None] | None = None, on_added: OnAdded | None = None,
             name: str | None = None) -> Entry:
    """Add a file, symlink or folder (recursively); returns the root entry."""
    p = get_profile(profile)
    path = Path(path)
    label = _arg_name(path) if name is None else name
    entry, d = _add(path, label, p, sink, hidden=hidden, progress=progress,
                    on_added=on_added, top=True)
    if d is not None and on_added is not None:
        _emit_dirs(d, on_added)
    return entry


def _arg_name(path: Path) -> str:
    """The name Kubo gives an argument: its last component (``.`` is the folder's name)."""
    n = path.name
    if n in ("", ".", ".."):
        n = path.resolve().name
    return n


def add_paths(paths: Sequence[str | os.PathLike[str]], profile: str | Profile, sink: Sink | None,
              *, recursive: bool = True, hidden: bool = False, wrap: bool = False,
              stdin: IO[bytes] | None = None, stdin_name: str = "",
              progress: Callable[[int], None] | None = None,
              on_added: OnAdded | None = None) -> list[Entry]:
    """``ipfs add [-r] [-w] PATH...``: the roots, one per argument, or the
    wrapping folder's alone with ``wrap``.  ``"-"`` reads ``stdin`` (named
    ``stdin_name``, else by its CID, as Kubo names it)."""
    p = get_profile(profile)
    if not paths:
        raise AddInputError("nothing to add: give a file, a folder with -r, or - for stdin")
    seen: dict[str, str] = {}
    args: list[tuple[str, Path | None]] = []
    for raw in paths:
        if str(raw) == STDIN:
            args.append((stdin_name, None))
            continue
        path = Path(raw)
        if not os.path.lexists(path):
            raise AddInputError(f"{path} does not exist; check the path")
        if path.is_dir() and not path.is_symlink() and not recursive:
            raise AddInputError(f"{path} is a folder; add it with -r")
        name = _arg_name(path)
        key = os.path.abspath(path)
        if name in seen:
            if seen[name] == key:
                continue  # the same path twice: added once, as Kubo does
            raise AddInputError(
                f"two arguments are named {name!r} ({seen[name]} and {key}); "
                "add them in separate commands")
        seen[name] = key
        args.append((name, path))
    roots: list[tuple[str, Entry]] = []
    for name, arg in args:
        if arg is None:
            src = stdin if stdin is not None else sys.stdin.buffer
            entry = add_stream(src, p, sink, progress)
            label = name or entry.cid_str
            if on_added is not None:
                on_added(Added(label, entry, "file"))
            roots.append((label, entry))
        else:
            roots.append((name, add_tree(arg, p, sink, hidden=hidden, progress=progress,
                                         on_added=on_added, name=name)))
    if not wrap:
        return [e for _, e in roots]
    entry, blocks = build_directory_blocks(roots, p)
    if sink is not None:
        for c, block in blocks:
            sink(c, block)
    if on_added is not None:
        on_added(Added("", entry, "directory"))
    return [entry]


def add_path(path: str | os.PathLike[str], profile: str | Profile = "kubo-v0",
             store: BlockStore | None = None, only_hash: bool = False, *,
             recursive: bool = True, hidden: bool = False, pin: bool = False,
             progress: Callable[[int], None] | None = None) -> CID:
    """CID of ``path`` as ``ipfs add`` (profile flags) would print it.

    Unless ``only_hash``, every block goes into ``store`` (the default local
    store when None); ``pin`` pins the root there.
    """
    p = Path(path)
    if p.is_dir() and not p.is_symlink() and not recursive:
        raise AddInputError(f"{p} is a folder; add it with -r")
    if only_hash:
        return cidmod.to_cid(add_tree(p, profile, None, hidden=hidden, progress=progress).cid)
    if store is None:
        from webaccel.content.store import BlockStore

        store = BlockStore.default()
    with store.gc_paused():
        entry = add_tree(p, profile, store.put_trusted, hidden=hidden, progress=progress)
        if pin:
            store.pin(entry.cid)
    store.enforce_budget()
    return cidmod.to_cid(entry.cid)
