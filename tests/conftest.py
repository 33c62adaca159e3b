"""Shared fixtures.  Browser tests reuse one accelerator per module to save start-ups."""

from __future__ import annotations

import pytest


@pytest.fixture(scope="module")
def accelerator():
    from webaccel.api import WebAccelerator

    acc = WebAccelerator(max_connections=1)
    yield acc
    acc.shutdown()
