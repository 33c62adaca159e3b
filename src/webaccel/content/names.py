"""Model names -> history of CIDs (pure JSON records under ``$WEBACCEL_HOME/names``).

A name (``minilm``) never changes what a CID means; publishing adds a new
version to its history.  ``resolve(name)`` gives the newest version unless a
version is pinned with ``pin_version``, so caches keyed by CID never go stale:
"refresh" is resolving the name again.  One JSON file per name, replaced
atomically under an exclusive lock, so concurrent publishers never lose a
version.
"""
from __future__ import annotations

import contextlib
import fcntl
import json
import os
import re
import time
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from webaccel.content import cid as cidmod
from webaccel.errors import InvalidInputError, ModelNotFoundError

_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$")


@dataclass
class Version:
    version: int
    cid: str
    at: float
    size: int | None = None
    profile: str | None = None
    note: str | None = None


@dataclass
class NameRecord:
    name: str
    versions: list[Version] = field(default_factory=list)
    pinned_version: int | None = None

    def current(self) -> Version:
        if not self.versions:
            raise ModelNotFoundError(f"name {self.name!r} has no versions; publish one first")
        if self.pinned_version is not None:
            for v in self.versions:
                if v.version == self.pinned_version:
                    return v
        return self.versions[-1]


def check_name(name: str) -> str:
    if not _NAME.match(name):
        raise InvalidInputError(
            "a model name is 1-128 letters, digits, '.', '_' or '-' and starts with a letter/digit")
    return name


class NameRegistry:
    def __init__(self, root: str | os.PathLike[str] | None = None) -> None:
        if root is None:
            from webaccel.paths import subdir

            root = subdir("names")
        self.root = Path(root)
        self.root.mkdir(parents=True, exist_ok=True)

    def _path(self, name: str) -> Path:
        return self.root / f"{check_name(name)}.json"

    @contextlib.contextmanager
    def _locked(self, name: str) -> Iterator[None]:
        lock = self.root / f".{check_name(name)}.lock"
        with open(lock, "a") as f:
            fcntl.flock(f, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(f, fcntl.LOCK_UN)

    def get(self, name: str) -> NameRecord:
        p = self._path(name)
        if not p.exists():
            raise ModelNotFoundError(f"no model named {name!r}; publish it with "
                                     "`webaccel models publish NAME PATH`")
        raw: dict[str, Any] = json.loads(p.read_text())
        return NameRecord(raw["name"], [Version(**v) for v in raw["versions"]],
                          raw.get("pinned_version"))

    def _save(self, rec: NameRecord) -> None:
        p = self._path(rec.name)
        tmp = p.with_suffix(".tmp")
        tmp.write_text(json.dumps(asdict(rec), indent=1))
        os.replace(tmp, p)

    def publish(self, name: str, cid: cidmod.CIDLike, *, size: int | None = None,
                profile: str | None = None, note: str | None = None) -> Version:
        text = cidmod.to_str(cidmod.parse(cid))
        with self._locked(name):
            try:
                rec = self.get(name)
            except ModelNotFoundError:
                rec = NameRecord(name)
            if rec.versions and rec.versions[-1].cid == text:
                return rec.versions[-1]  # same content again: not a new version
            v = Version((rec.versions[-1].version + 1) if rec.versions else 1, text, time.time(),
                        size, profile, note)
            rec.versions.append(v)
            self._save(rec)
            return v

    def resolve(self, name: str, version: int | None = None) -> str:
        rec = self.get(name)
        if version is None:
            return rec.current().cid
        for v in rec.versions:
            if v.version == version:
                return v.cid
        raise ModelNotFoundError(f"{name!r} has no version {version}")

    def pin_version(self, name: str, version: int | None) -> None:
        """Make ``resolve(name)`` return ``version`` (None: follow the newest again)."""
        with self._locked(name):
            rec = self.get(name)
            if version is not None and all(v.version != version for v in rec.versions):
                raise ModelNotFoundError(f"{name!r} has no version {version}")
            rec.pinned_version = version
            self._save(rec)

    def names(self) -> list[str]:
        return sorted(p.stem for p in self.root.glob("*.json"))
