"""generate.mjs's continuous batching against a fake decoder in Node (no browser).

The fake's next token depends on each row's unmasked cache, its count and the
row's position, so a slip in left-padding, masks, position ids or re-packing
shows as tokens different from the stream's solo run.  Also: a step that
throws fails every stream in it with that same error (typed, nothing hangs)
and the page serves the next stream; a cancelled stream leaves the batch
without a ``done`` frame.
"""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

import pytest

WEB = Path(__file__).resolve().parents[2] / "src" / "webaccel" / "web"
SCRIPT = Path(__file__).with_name("fake_decoder.mjs")


@pytest.fixture(scope="module")
def out() -> dict:
    node = shutil.which("node")
    if node is None:
        pytest.skip("node is not installed")
    proc = subprocess.run(
        [node, str(SCRIPT), (WEB / "generate.mjs").as_uri()],
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    return json.loads(proc.stdout)


def test_streams_joining_and_leaving_equal_their_solo_runs(out):
    assert out["staggered"] == out["solo"]
    assert all(b >= 2 for b in out["batch_max"].values()), out["batch_max"]
    assert max(out["batches"]) == 3  # a, b and c (then a, b and d) shared steps


def test_a_cancelled_stream_leaves_and_the_others_finish(out):
    c = out["cancel"]
    assert c["b"] == out["solo"]["b"][:3] and not c["b_done"]
    assert c["a"] == out["solo"]["a"] and c["c"] == out["solo"]["c"]
    assert c["busy"] == 0


def test_a_failed_step_fails_every_stream_in_it_with_the_same_error(out):
    assert out["error"] == [["rejected", "WORKER_LOST", "device lost in step"]] * 2
    assert out["error_same_object"] is True
    assert out["after_error"] == out["solo"]["b"] and out["after_error_busy"] == 0
