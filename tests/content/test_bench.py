"""The content benchmarks, called directly with small sizes (the runner is tested elsewhere)."""
from __future__ import annotations

import pytest

from webaccel.bench.core import BenchContext


def test_import_bench_small(kubo) -> None:
    from webaccel.bench import import_speed

    m = import_speed.run(BenchContext(repeat=2, options={"size_mib": 8, "warmup": 0}))
    f = m.figures
    assert f["ours_mb_per_s"] > 0 and f["kubo_mb_per_s"] > 0
    assert m.ratio == pytest.approx(f["ours_mb_per_s"] / f["kubo_mb_per_s"])
    assert f["cid"].startswith("Qm") and f["ours_seconds"]["n"] == 2


def test_multi_source_bench_small() -> None:
    from webaccel.bench import multi_source

    m = multi_source.run(BenchContext(repeat=1, options={"size_mib": 4, "peers": 2,
                                                         "rate_mib_s": 4}))
    f = m.figures
    assert f["peers"] == 2 and f["one_peer_seconds"]["n"] == 1
    # one peer capped at 4 MiB/s cannot move 4 MiB much faster than 1 s
    assert f["one_peer_seconds"]["median"] > 0.7
    one, many = f["one_peer_seconds"]["median"], f["n_peers_seconds"]["median"]
    assert m.ratio == pytest.approx(one / many)
    assert sum(f["last_run"]["many"]["blocks_per_peer"]) == 17  # 16 leaves + root
