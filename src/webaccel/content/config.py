"""Content-layer settings: ``$WEBACCEL_HOME/content.json`` (all keys optional).

``{"peers": ["http://host:8700", ...], "replication_min": 2, "replication_max": 3,
"disk_budget": 10737418240, "cluster": {"url": "http://127.0.0.1:9094",
"token": null}, "upload_token": "...", "hot_fetches": 5,
"replicate_to": [{"url": "http://host:8700", "token": "..."}]}``

``peers`` are where blocks are fetched from; ``replicate_to`` are where new
pins are pushed (their upload token); ``upload_token`` is what this server
accepts for uploads.
"""
from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from webaccel.errors import InvalidInputError

if TYPE_CHECKING:
    from webaccel.content.store import BlockSource


@dataclass
class ContentConfig:
    peers: list[str] = field(default_factory=list)
    replication_min: int = 1
    replication_max: int = 3
    disk_budget: int | None = None
    cluster: dict[str, Any] | None = None
    upload_token: str | None = None
    hot_fetches: int = 5  # fetches of one CID after which it is replicated on demand
    # peers that accept CAR uploads: [{"url": "http://host:8700", "token": "..."}]
    replicate_to: list[dict[str, Any]] = field(default_factory=list)

    def peer_network(self) -> BlockSource | None:
        """The block store's network tier for ``peers`` (None without peers)."""
        if not self.peers:
            return None
        from webaccel.content.fetcher import Fetcher

        return Fetcher(self.peers)


def config_path() -> Path:
    from webaccel.paths import home

    return home() / "content.json"


def load_config(path: Path | None = None) -> ContentConfig:
    path = path or config_path()
    if not path.exists():
        return ContentConfig()
    try:
        raw = json.loads(path.read_text())
        known = {k: v for k, v in raw.items() if k in ContentConfig.__dataclass_fields__}
        return ContentConfig(**known)
    except (ValueError, TypeError) as exc:
        raise InvalidInputError(f"{path} is not valid content config JSON: {exc}") from exc


def save_config(cfg: ContentConfig, path: Path | None = None) -> None:
    path = path or config_path()
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(asdict(cfg), indent=2))
    os.replace(tmp, path)
