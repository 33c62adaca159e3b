"""``multi-source``: fetch time from one bandwidth-capped peer / from N such peers.

N local gateway processes serve one block store holding a seeded random
64 MiB file (kubo-v1 profile: 256 KiB raw leaves); each process caps its own
total egress at the same rate (token bucket, ``rate_mib_s``, default 2 MiB/s),
like peers on equal uplinks.  Each repeat fetches the whole DAG with the
multi-source fetcher (every block verified) from peer 1 alone and then from
all N (default 4), into a fresh file checked byte for byte.  The ratio is
median(1 peer) / median(N peers); the ideal is N.

The cap must stay well under what this machine can move at all, or the
speed-up measures the CPU instead of the fetcher: so the bench first fetches
the file once from one uncapped peer and reports that as
``uncapped_one_peer_mib_s``, with ``capacity_bound`` true when the cap is over
half of it (then a capped peer is really limited by CPU, not by its cap).

Options: ``size_mib`` (64), ``peers`` (4), ``rate_mib_s`` (2), ``repeat``
(default 2, capped by ``ctx.repeat``), ``warmup`` (default 0: the first
request to each peer already pays its TCP set-up inside the timing).
"""
from __future__ import annotations

import asyncio
import hashlib
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


def _fetch(root: str, urls: list[str], out: Path) -> tuple[float, dict[str, object]]:
    from webaccel.content.fetcher import Fetcher

    async def go() -> tuple[float, dict[str, object]]:
        f = Fetcher(urls, window=8 * len(urls), per_peer=8, timeout=60)
        try:
            t0 = time.perf_counter()
            stats = await f.fetch(root, out)
            secs = time.perf_counter() - t0
            return secs, {"retries": stats.retries, "hedged": stats.hedged,
                          "blocks_per_peer": [p["blocks"] for p in stats.peers]}
        finally:
            await f.aclose()

    return asyncio.run(go())


def _digest(p: Path) -> bytes:
    h = hashlib.sha256()
    with open(p, "rb") as f:
        for piece in iter(lambda: f.read(1 << 20), b""):
            h.update(piece)
    return h.digest()


@benchmark("multi-source", ratio_is="fetch time from 1 capped peer / from N capped peers",
           better="higher")
def run(ctx: BenchContext) -> Measurement:
    from webaccel import paths
    from webaccel.bench.import_speed import _write
    from webaccel.content.add import add_path
    from webaccel.content.store import BlockStore
    from webaccel.content.testing import peers

    size = int(ctx.options.get("size_mib", 64)) << 20
    n = int(ctx.options.get("peers", 4))
    rate = float(ctx.options.get("rate_mib_s", 2)) * (1 << 20)
    repeat = int(ctx.options.get("repeat", min(ctx.repeat, 2)))
    warmup = int(ctx.options.get("warmup", 0))
    if n < 2:
        raise BenchmarkUnavailable("needs at least 2 peers")
    with tempfile.TemporaryDirectory(dir=paths.subdir("tmp")) as tmp:
        t = Path(tmp)
        src = t / "model.bin"
        _write(src, size, seed=64)
        want = _digest(src)
        root = str(add_path(src, "kubo-v1", store=BlockStore(t / "peer", fsync=False)))
        one_s: list[float] = []
        many_s: list[float] = []
        detail: dict[str, object] = {}
        specs: list[dict[str, object]] = [{"root": t / "peer", "rate": rate} for _ in range(n)]
        with peers([*specs, {"root": t / "peer"}]) as procs:
            urls = [p.url for p in procs[:n]]
            uncapped_s, _ = _fetch(root, [procs[n].url], t / "out-uncapped.bin")
            (t / "out-uncapped.bin").unlink()
            for i in range(warmup + repeat):
                for label, use, bucket in (("one", urls[:1], one_s), ("many", urls, many_s)):
                    out = t / f"out-{label}-{i}.bin"
                    secs, info = _fetch(root, use, out)
                    if _digest(out) != want:
                        raise RuntimeError("fetched bytes differ from the source")
                    out.unlink()
                    if i >= warmup:
                        bucket.append(secs)
                        detail[label] = info
    one, many = summarize(one_s), summarize(many_s)
    mib = size / (1 << 20)
    return Measurement(
        ratio=one["median"] / many["median"],
        figures={
            "file_mib": size >> 20, "peers": n, "rate_mib_s_per_peer": rate / (1 << 20),
            "one_peer_seconds": one, "n_peers_seconds": many,
            "one_peer_mib_s": mib / one["median"], "n_peers_mib_s": mib / many["median"],
            "ideal_ratio": float(n), "last_run": detail, "cid": root,
            "uncapped_one_peer_mib_s": mib / uncapped_s,
            "capacity_bound": rate / (1 << 20) > 0.5 * mib / uncapped_s,
        },
    )
