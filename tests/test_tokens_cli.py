"""``webaccel tokens list|create|revoke`` against a real ``webaccel serve`` (no browser).

The server runs in a subprocess with its own WEBACCEL_HOME and writes its state
file there; the commands run in-process (typer's CliRunner) with that home.
"""

from __future__ import annotations

import json
import os
import re
import signal
import socket
import stat

import httpx
import psutil
import pytest
from typer.testing import CliRunner

from webaccel.cli import app

runner = CliRunner()


def tokens(home, *args: str, env: dict[str, str] | None = None):
    return runner.invoke(
        app,
        ["tokens", *args],
        env={"WEBACCEL_HOME": str(home), "WEBACCEL_MASTER_KEY": "", **(env or {})},
    )


def failed(result, code: str) -> str:
    """The one error line of a failed command (exit 2, no traceback)."""
    assert result.exit_code == 2, (result.exit_code, result.output)
    assert f"[{code}]" in result.stderr and "Traceback" not in result.stderr, result.stderr
    return result.stderr


def test_list_create_revoke_through_the_state_file(serve_process) -> None:
    server = serve_process("--join", "--api-key", "sk-t")
    home = server.home
    # The state file: the URL and master key, readable by its owner only.
    assert stat.S_IMODE(os.stat(server.state_file).st_mode) == 0o600
    assert server.state["pid"] == server.proc.pid and server.state["join"] is True
    assert server.url.startswith("http://127.0.0.1:")

    # The banner names the token it printed and the real command to revoke it.
    out = server.wait_output("webaccel tokens revoke ")
    banner_id = re.search(r"webaccel tokens revoke ([0-9a-f]{8})\b", out).group(1)

    listed = tokens(home, "list")
    assert listed.exit_code == 0, listed.output
    lines = listed.stdout.splitlines()  # not a terminal: one tab-separated line per token
    assert lines[0].split("\t") == ["id", "state", "label", "created", "expires", "workers"]
    assert [line.split("\t")[:3] for line in lines[1:]] == [[banner_id, "active", "serve"]]

    made = tokens(home, "create", "--label", "phone", "--ttl", "2h", "--max-workers", "2", "--json")
    assert made.exit_code == 0, made.output
    tok = json.loads(made.stdout)
    assert tok["label"] == "phone" and tok["join_url"] == f"{server.url}/join?token={tok['token']}"
    assert 7100 < tok["expires"] - tok["created"] <= 7200
    with httpx.Client() as client:
        assert client.get(tok["join_url"]).status_code == 303  # the link opens the page

    plain = tokens(home, "create")  # the defaults; the id and the link are printed
    assert plain.exit_code == 0, plain.output
    plain_id = re.search(r"token id: (\S+)", plain.stdout).group(1)
    assert re.search(
        rf"join link \(a secret, shown once\): {re.escape(server.url)}/join\?token=", plain.stdout
    )
    assert f"webaccel tokens revoke {plain_id}" in plain.stdout

    as_json = json.loads(tokens(home, "list", "--json").stdout)["tokens"]
    assert [t["id"] for t in as_json] == [banner_id, tok["id"], plain_id]
    assert tok["token"] not in json.dumps(as_json)  # secrets are never listed

    revoked = tokens(home, "revoke", tok["id"])
    assert revoked.exit_code == 0, revoked.output
    assert revoked.stdout.startswith(f"revoked {tok['id']}; no browser was connected")
    states = {
        t["id"]: t["revoked"] for t in json.loads(tokens(home, "list", "--json").stdout)["tokens"]
    }
    assert states == {banner_id: False, tok["id"]: True, plain_id: False}
    with httpx.Client() as client:
        assert client.get(tok["join_url"]).status_code == 403
    again = tokens(home, "revoke", banner_id, "--json")
    assert json.loads(again.stdout) == {"id": banner_id, "revoked": True, "disconnected": []}

    # --api and --key reach the same server from anywhere (here: an empty home).
    elsewhere = server.home.parent / "elsewhere"
    elsewhere.mkdir()
    by_url = tokens(elsewhere, "list", "--api", server.url, "--key", server.master_key, "--json")
    assert by_url.exit_code == 0, by_url.output
    assert len(json.loads(by_url.stdout)["tokens"]) == 3
    by_env = tokens(
        elsewhere,
        "list",
        "--api",
        server.url + "/",
        "--json",
        env={"WEBACCEL_MASTER_KEY": server.master_key},
    )
    assert by_env.exit_code == 0, by_env.output

    # Errors: typed, one line, and they say what to do.
    wrong = failed(tokens(home, "list", "--key", "not-the-key"), "UNAUTHORIZED")
    assert "refused the master key (from --key or WEBACCEL_MASTER_KEY)" in wrong
    unknown = failed(tokens(home, "revoke", "nope"), "NOT_FOUND")
    assert "no join token with id 'nope'" in unknown and "webaccel tokens list" in unknown
    as_json_err = tokens(home, "revoke", "nope", "--json")
    assert as_json_err.exit_code == 2
    assert json.loads(as_json_err.stdout)["error"]["code"] == "NOT_FOUND"
    no_key = failed(tokens(elsewhere, "list", "--api", server.url), "BAD_REQUEST")
    assert "--key" in no_key and "WEBACCEL_MASTER_KEY" in no_key
    assert "--api must be a URL" in failed(tokens(home, "list", "--api", "nope"), "BAD_REQUEST")
    assert "--ttl must be a duration" in failed(
        tokens(home, "create", "--ttl", "soon"), "BAD_REQUEST"
    )
    assert "max_workers" in failed(tokens(home, "create", "--max-workers", "0"), "BAD_REQUEST")
    assert "at most 200" in failed(tokens(home, "create", "--label", "x" * 201), "BAD_REQUEST")

    # A clean exit removes the state file; then there is no server to find.
    assert server.stop(signal.SIGINT) == 0
    assert not server.state_file.exists()
    gone = failed(tokens(home, "list"), "BACKEND_UNAVAILABLE")
    assert "no webaccel server is running" in gone and "webaccel serve --join" in gone
    # ... and --api to a port nobody listens on says so too.
    down = failed(
        tokens(elsewhere, "list", "--api", server.url, "--key", "k"), "BACKEND_UNAVAILABLE"
    )
    assert f"no webaccel server answers at {server.url}" in down


def test_a_killed_server_leaves_a_stale_file_that_is_detected(serve_process) -> None:
    server = serve_process("--join")
    assert server.stop(signal.SIGKILL) == -signal.SIGKILL
    assert server.state_file.exists()  # nobody cleaned up
    stale = failed(tokens(server.home, "list"), "BACKEND_UNAVAILABLE")
    assert f"(pid {server.proc.pid}, {server.url}) is gone" in stale
    assert "removed that stale file" in stale and "webaccel serve --join" in stale
    assert not server.state_file.exists()
    assert "no webaccel server is running" in failed(
        tokens(server.home, "list"), "BACKEND_UNAVAILABLE"
    )


def test_a_live_pid_that_does_not_answer_is_no_server(tmp_path) -> None:
    # The pid is alive (this very process) but nothing listens at the URL.
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    me = psutil.Process()
    (tmp_path / "serve.json").write_text(
        json.dumps(
            {
                "url": f"http://127.0.0.1:{port}",
                "master_key": "k",
                "pid": me.pid,
                "started": me.create_time(),
                "join": True,
            }
        )
    )
    err = failed(tokens(tmp_path, "list"), "BACKEND_UNAVAILABLE")
    assert f"no webaccel server answers at http://127.0.0.1:{port}" in err
    assert f"pid {me.pid}" in err
    # Another process that got the same pid later (its start time differs) is no server.
    (tmp_path / "serve.json").write_text(
        json.dumps(
            {
                "url": f"http://127.0.0.1:{port}",
                "master_key": "k",
                "pid": me.pid,
                "started": me.create_time() - 3600,
                "join": True,
            }
        )
    )
    assert "is gone" in failed(tokens(tmp_path, "list"), "BACKEND_UNAVAILABLE")
    (tmp_path / "serve.json").write_text("{not json")
    assert "cannot read" in failed(tokens(tmp_path, "list"), "BACKEND_UNAVAILABLE")


def test_a_server_that_takes_no_joiners_says_how_to_get_tokens(serve_process) -> None:
    server = serve_process()  # loopback, no --join: no /admin/tokens
    assert server.state["join"] is False
    err = failed(tokens(server.home, "list"), "NOT_FOUND")
    assert "does not take browsers that join" in err and "webaccel serve --join" in err
    err = failed(tokens(server.home, "revoke", "abc"), "NOT_FOUND")
    assert "does not take browsers that join" in err
    assert server.stop(signal.SIGTERM) == 0
    assert not server.state_file.exists()


@pytest.mark.parametrize(
    ("text", "seconds"), [("90", 90), ("90s", 90), ("30m", 1800), ("2h", 7200), ("1.5d", 129600)]
)
def test_ttl_durations(text: str, seconds: float) -> None:
    from webaccel.admin import parse_duration

    assert parse_duration(text) == seconds


def test_state_file_is_atomic_private_and_removed_only_by_its_writer(tmp_path) -> None:
    from webaccel import admin

    path = tmp_path / "serve.json"
    mine = admin.write_state("http://0.0.0.0:8700", "key-1", join=True, path=path)
    assert mine.url == "http://127.0.0.1:8700"  # a wildcard bind is reached on loopback
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert admin.read_state(path) == mine and admin.running_server(path) == mine
    assert [p.name for p in tmp_path.iterdir()] == ["serve.json"]  # no temporary file left
    # Another server (same home) wrote its own since: ours must not remove it.
    other = admin.write_state("http://[::]:8701", "key-2", join=False, path=path)
    assert other.url == "http://[::1]:8701"
    assert admin.remove_state(mine) is False and path.exists()
    assert admin.remove_state(other) is True and not path.exists()
