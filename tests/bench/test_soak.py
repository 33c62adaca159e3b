"""A short soak through ``webaccel serve``: with every answer checked, the lying worker
is quarantined and no wrong answer reaches a client while browsers are killed."""

from __future__ import annotations

import pytest

pytestmark = [pytest.mark.browser, pytest.mark.slow]


def test_short_soak_delivers_no_wrong_answer() -> None:
    pytest.importorskip("torch")
    from webaccel.bench.core import BenchContext
    from webaccel.bench.soak import soak

    m = soak(BenchContext(options={"minutes": 0.75, "clients": 3, "kill_every": 20}))
    f = m.figures
    assert f["sent"] > 0 and f["wrong"] == 0, f
    assert f["liar_lies"] >= 1 and len(f["quarantined"]) == 1, f
    assert f["kills_at_s"], "no browser was killed"
    # verify="all": every run was checked before its answers were delivered (a check
    # covers every request batched into that run; streams are not checked yet)
    assert f["answers_checked"] > 0
    assert f["peak_rss_mb"] > 0 and len(f["memory_mb"]) > 10
