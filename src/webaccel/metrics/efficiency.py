"""Resource-efficiency figures, computed the same way for ``get_metrics()`` and the report.

Pure functions over plain numbers (no store, no I/O): the live figures
(:mod:`webaccel.metrics.live`) feed them what this process recorded, the
report (:mod:`webaccel.metrics.report`) what the DuckDB file holds.

* **Cache hit rate per tier** -- the share of successful reads (model loads, or
  block fetches) each tier served; a *hit* is a read from a local tier
  (``memory``, ``disk``, ``browser-cache``), a *miss* one that crossed the
  network (:data:`NETWORK_TIERS`: ``network``, ``peer``, ``gateway``...).
  Bytes served by hits are the network bytes the caches saved.  Reads whose
  tier was not recorded count in neither.
* **Connection reuse** -- browser connections opened (workers that joined)
  against requests served (successful inferences and generations).
* **Memory** -- see :mod:`webaccel.pool.memory` for what is measured.
"""
from __future__ import annotations

import statistics
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

NETWORK_TIERS = frozenset({"network", "peer", "gateway", "origin", "remote"})
UNKNOWN_TIER = "unknown"

UNMEASURABLE = "no local browser process (a remote or joined worker)"
NOT_MEASURED = f"not measured: {UNMEASURABLE}"
NO_SAMPLE = "not measured: no memory sample yet"


def is_hit(tier: str | None) -> bool | None:
    """True for a local cache tier, False for a network one, None when not recorded."""
    if tier is None or tier == UNKNOWN_TIER:
        return None
    return tier not in NETWORK_TIERS


def cache_figures(by_tier: Mapping[str, tuple[int, int]]) -> dict[str, Any]:
    """``by_tier``: tier -> (successful reads, bytes).  Hit rate overall and per tier."""
    reads = sum(n for n, _ in by_tier.values())
    known = sum(n for t, (n, _) in by_tier.items() if is_hit(t) is not None)
    hits = sum(n for t, (n, _) in by_tier.items() if is_hit(t))
    saved = sum(b for t, (_, b) in by_tier.items() if is_hit(t))
    network = sum(b for t, (_, b) in by_tier.items() if is_hit(t) is False)
    return {
        "reads": reads,
        "hits": hits,
        "hit_rate": hits / known if known else None,
        "bytes_saved": saved,  # served by a local tier instead of over the network
        "network_bytes": network,
        "by_tier": {
            t: {"reads": n, "bytes": b, "share": n / reads if reads else None,
                "cache": is_hit(t)}
            for t, (n, b) in sorted(by_tier.items(), key=lambda kv: (-kv[1][0], kv[0]))
        },
    }


def connection_figures(opened: int, served: int) -> dict[str, Any]:
    return {
        "opened": opened,
        "requests_served": served,
        "requests_per_connection": served / opened if opened else None,
    }


def error_figures(requests: int, errors: int) -> dict[str, Any]:
    return {"requests": requests, "errors": errors,
            "error_rate": errors / requests if requests else None}


def recovery_figures(seconds: Sequence[float]) -> dict[str, Any]:
    return {
        "count": len(seconds),
        "median_s": statistics.median(seconds) if seconds else None,
        "max_s": max(seconds) if seconds else None,
    }


def growth_figures(deltas: Iterable[int]) -> dict[str, Any]:
    """RSS growth of a model's measured loads (bytes; may be negative when the browser
    freed memory meanwhile)."""
    d = list(deltas)
    return {
        "loads_measured": len(d),
        "median_rss_growth_bytes": round(statistics.median(d)) if d else None,
        "max_rss_growth_bytes": max(d) if d else None,
    }
