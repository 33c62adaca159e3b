"""`webaccel bench` and `webaccel report` through Typer, beside a live writing process."""
from __future__ import annotations

import json
from pathlib import Path

import pytest
import typer
from typer.testing import CliRunner

from webaccel.metrics.cli import register
from webaccel.metrics.store import read_query

from . import toybench
from .conftest import spawn, wait_line


@pytest.fixture
def app() -> typer.Typer:
    a = typer.Typer()
    register(a)

    @a.callback()
    def main() -> None:  # keep subcommands as subcommands
        pass

    return a


def test_bench_json_lines_and_store(app: typer.Typer, db_path: Path,
                                    monkeypatch: pytest.MonkeyPatch) -> None:
    toybench.install(monkeypatch)
    toybench.install(monkeypatch, "toy-unavailable", toybench.unavailable)
    res = CliRunner().invoke(app, ["bench", "toy-sum", "toy-unavailable", "--json",
                                   "--repeat", "5", "--warmup", "1"])
    assert res.exit_code == 0, res.output
    lines = [json.loads(x) for x in res.stdout.splitlines()]
    assert [x["benchmark"] for x in lines] == ["toy-sum", "toy-unavailable"]
    assert list(lines[0])[:2] == ["benchmark", "ratio"]
    assert lines[0]["figures"]["python_ms"]["n"] == 5
    assert lines[1]["unavailable"]
    rows = read_query(db_path, "SELECT benchmark, ratio, unavailable FROM benchmarks ORDER BY 1")
    assert rows == [{"benchmark": "toy-sum", "ratio": lines[0]["ratio"], "unavailable": None},
                    {"benchmark": "toy-unavailable", "ratio": None,
                     "unavailable": lines[1]["unavailable"]}]


def test_bench_table_unknown_name_and_crash_exit_codes(app: typer.Typer,
                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    toybench.install(monkeypatch)
    toybench.install(monkeypatch, "toy-broken", toybench.broken)
    runner = CliRunner()
    res = runner.invoke(app, ["bench", "toy-sum", "--repeat", "3", "--warmup", "0"])
    assert res.exit_code == 0 and "toy-sum" in res.stdout and "stored in" in res.stdout
    res = runner.invoke(app, ["bench", "no-such-bench"])
    assert res.exit_code == 2 and "unknown benchmark" in res.output
    res = runner.invoke(app, ["bench", "toy-sum", "--json", "-o", "size=1000", "--repeat", "2"])
    assert res.exit_code == 0 and json.loads(res.stdout)["figures"]["n"] == 1000
    res = runner.invoke(app, ["bench", "toy-sum", "-o", "size"])
    assert res.exit_code == 2 and "KEY=VALUE" in res.output
    res = runner.invoke(app, ["bench", "toy-broken", "--json"])
    assert res.exit_code == 1 and json.loads(res.stdout)["error"] == "RuntimeError: boom"


def test_bench_and_report_beside_a_writing_server(app: typer.Typer, db_path: Path,
                                                  tmp_path: Path,
                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    """Another process writes the file every 50 ms the whole time; nothing fails on the lock."""
    toybench.install(monkeypatch)
    server = spawn("server", str(db_path), "3")
    try:
        wait_line(server, "ready")
        runner = CliRunner()
        for i in range(2):
            res = runner.invoke(app, ["bench", "toy-sum", "--json", "--repeat", "3",
                                      "--warmup", "0"])
            assert res.exit_code == 0, res.output
            res = runner.invoke(app, ["report", "--out", str(tmp_path / f"r{i}")])
            assert res.exit_code == 0, res.output
            md = (tmp_path / f"r{i}" / "report.md").read_text()
            assert "toy-sum" in md
        done = wait_line(server, "done", timeout=20).split()
        server.wait(10)
    finally:
        if server.poll() is None:
            server.kill()
            server.wait()
    assert server.returncode == 0
    recorded = int(done[1])
    rows = read_query(db_path, "SELECT count(*) AS n FROM inferences WHERE model = 'srv'")
    assert rows == [{"n": recorded}]  # the server lost nothing either
    assert read_query(db_path, "SELECT count(*) AS n FROM benchmarks") == [{"n": 2}]
