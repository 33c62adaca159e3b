"""Fixtures of the pipeline-stage tests."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import pytest


@pytest.fixture
async def engine() -> AsyncIterator[Any]:
    """A started Engine of up to 3 Chromium workers on wasm (one per stage)."""
    try:
        from webaccel.browsers.chromium import find_chromium

        find_chromium(None)
    except Exception as exc:  # noqa: BLE001 - no browser stack here
        pytest.skip(f"needs Chromium: {exc}")
    from webaccel.engine import Engine

    eng = Engine(max_connections=3, default_platform="wasm")
    await eng.start()
    try:
        yield eng
    finally:
        await eng.close()
