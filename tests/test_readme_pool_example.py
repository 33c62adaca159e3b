"""The README's pool example, executed as written (its code block is read from the
README): the seed API answers, and on this GPU-less machine it says it used wasm and
why -- a priority list that starts with webgpu is a preference, not a demand for the
software adapter."""

from __future__ import annotations

import contextlib
import io
import re
from pathlib import Path

import numpy as np
import pytest

pytestmark = [pytest.mark.browser, pytest.mark.slow]

README = Path(__file__).resolve().parents[1] / "README.md"


def pool_example() -> str:
    blocks = re.findall(r"```python\n(.*?)```", README.read_text(), flags=re.S)
    (block,) = [b for b in blocks if "ResourcePoolBridgeIntegration(max_connections=2)" in b]
    return block


def test_the_readme_pool_example_runs_as_written(tmp_path, monkeypatch) -> None:
    from PIL import Image

    monkeypatch.chdir(tmp_path)  # the example reads photo.jpg from the working directory
    Image.fromarray((np.random.default_rng(0).random((224, 224, 3)) * 255).astype("uint8")).save(
        "photo.jpg"
    )
    scope: dict = {}
    printed = io.StringIO()
    with contextlib.redirect_stdout(printed):
        exec(compile(pool_example(), str(README), "exec"), scope)  # noqa: S102 - our README
    one, both = scope["one"], scope["both"]
    assert one["embeddings"].shape == (1, 384)
    assert all(isinstance(r, dict) for r in both), both  # no error inside the results
    assert both[1]["browser"] == "chromium" and "regions" in both[1]["results"]
    if one["backend"] == "wasm":  # no real GPU here: it says why
        why = one["fallback_reason"]
        assert "software rasterizer" in why or "unavailable" in why, why
    assert one["backend"] in printed.getvalue()
