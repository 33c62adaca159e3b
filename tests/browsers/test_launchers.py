"""The launcher registry: every built-in launcher registers itself; no browser starts here."""

from __future__ import annotations

from itertools import product

import pytest

from webaccel.browsers import launch_worker, launchers
from webaccel.errors import BackendUnavailableError


def test_every_builtin_launcher_registers_itself() -> None:
    got = {(x.name, x.browser) for x in launchers.registered()}
    assert got == set(product(launchers.NAMES, launchers.FAMILIES))


def test_doctor_rows_come_from_the_registry() -> None:
    from webaccel.browsers.launching import launcher_status

    rows = [(r["launcher"], r["browser"]) for r in launcher_status()]
    assert sorted(rows) == sorted(
        [
            ("subprocess", "chromium"),
            ("selenium", "chromium"),
            ("playwright", "chromium"),
            ("grid", "chromium"),
            ("subprocess", "firefox"),
            ("selenium", "firefox"),
            ("playwright", "firefox"),
        ]
    )
    assert rows[0] == ("subprocess", "chromium")  # families in order, launchers in NAMES order


def test_register_refuses_unknown_names() -> None:
    async def launch(server, req):  # type: ignore[no-untyped-def]
        raise AssertionError

    with pytest.raises(ValueError):
        launchers.register(launchers.Launcher("carrier-pigeon", "chromium", launch))
    assert launchers.find("carrier-pigeon", "chromium") is None


async def test_unknown_launcher_and_grid_without_url_are_errors() -> None:
    with pytest.raises(BackendUnavailableError, match="unknown launcher"):
        await launch_worker(None, "chromium", launcher="carrier-pigeon")  # type: ignore[arg-type]
    with pytest.raises(BackendUnavailableError, match="needs grid_url"):
        await launch_worker(None, "firefox", launcher="grid")  # type: ignore[arg-type]
