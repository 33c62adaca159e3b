"""The content commands through typer's CliRunner on an app built with our register functions."""
from __future__ import annotations

import json
from pathlib import Path

import typer
from typer.testing import CliRunner

from webaccel.content.add import add_path
from webaccel.content.cli import register, register_models
from webaccel.content.names import NameRegistry
from webaccel.content.store import BlockStore

from .conftest import write_random

runner = CliRunner()


def _app() -> typer.Typer:
    app = typer.Typer()
    register(app)
    models = typer.Typer()
    register_models(models)
    app.add_typer(models, name="models")
    return app


def _ok(*args: str) -> str:
    r = runner.invoke(_app(), list(args))
    assert r.exit_code == 0, (r.output, r.exception)
    return r.stdout


def test_add_only_hash_prints_cid_last_and_stores_nothing(tmp_path: Path, _home: Path) -> None:
    f = write_random(tmp_path / "f", 300_000, 1)
    last = _ok("add", str(f), "--only-hash").strip().splitlines()[-1]
    assert last == f"added {add_path(f, 'kubo-v0', only_hash=True)} f" and "Qm" in last
    last = last.split()[1]
    assert not BlockStore(None).has(last)
    for profile, prefix in (("kubo-v1", "bafybei"), ("unixfs-v1-2025", "bafkrei")):
        cid = _ok("add", str(f), "-Q", "--only-hash", "--profile", profile).strip()
        assert cid.startswith(prefix)


def test_add_cat_pin_gc_car_round_trip(tmp_path: Path, _home: Path) -> None:
    f = write_random(tmp_path / "f", 700_000, 2)
    cid = _ok("add", str(f), "--profile", "kubo-v1", "--pin", "-Q").strip()
    assert BlockStore(None).has(cid)
    assert runner.invoke(_app(), ["cat", cid]).stdout_bytes == f.read_bytes()
    assert cid in _ok("pin", "ls")
    car = tmp_path / "x.car"
    _ok("car", "export", cid, "-o", str(car))
    _ok("pin", "rm", cid, "--gc")
    assert not BlockStore(None).has(cid)
    r = runner.invoke(_app(), ["cat", cid])
    assert r.exit_code == 1 and "NOT_FOUND" in r.output
    assert _ok("car", "import", str(car)).strip() == cid
    assert json.loads(_ok("pin", "ls", "--json"))[0]["cid"] == cid
    out = tmp_path / "copy"
    _ok("get", cid, "-o", str(out))  # no peers: straight from the local store
    assert out.read_bytes() == f.read_bytes()


def test_add_folder_needs_r(tmp_path: Path) -> None:
    d = tmp_path / "d"
    d.mkdir()
    (d / "a").write_bytes(b"a")
    assert runner.invoke(_app(), ["add", str(d)]).exit_code == 2
    assert _ok("add", "-r", str(d), "-n", "-Q").strip().startswith("Qm")


def test_bad_cid_is_a_clean_error(tmp_path: Path) -> None:
    r = runner.invoke(_app(), ["cat", "definitely-not-a-cid"])
    assert r.exit_code == 1 and "BAD_REQUEST" in r.output


def test_models_publish_and_resolve(tmp_path: Path, _home: Path) -> None:
    v1 = write_random(tmp_path / "m1.onnx", 2000, 1)
    v2 = write_random(tmp_path / "m2.onnx", 2000, 2)
    c1 = _ok("models", "publish", "minilm", str(v1)).strip().splitlines()[-1]
    c2 = _ok("models", "publish", "minilm", str(v2), "--note", "retrained").strip().splitlines()[-1]
    assert c1 != c2
    assert _ok("models", "resolve", "minilm").strip() == c2
    assert _ok("models", "resolve", "minilm", "--version", "1").strip() == c1
    reg = NameRegistry()
    reg.pin_version("minilm", 1)
    assert reg.resolve("minilm") == c1
    reg.pin_version("minilm", None)
    assert reg.resolve("minilm") == c2
    assert [v.version for v in reg.get("minilm").versions] == [1, 2]
    assert reg.publish("minilm", c2).version == 2  # same CID again is not a new version
    assert BlockStore(None).is_pinned(c1) and BlockStore(None).is_pinned(c2)
    r = runner.invoke(_app(), ["models", "resolve", "nope"])
    assert r.exit_code == 1 and "MODEL_NOT_FOUND" in r.output


def test_pin_add_replicates_and_pin_status_reports(tmp_path: Path, _home: Path) -> None:
    from webaccel.content.config import ContentConfig, save_config
    from webaccel.content.gateway import create_gateway_app
    from webaccel.content.testing import serve_in_thread

    remote = BlockStore(tmp_path / "remote")
    srv = serve_in_thread(create_gateway_app(remote, upload_token="tok"))
    try:
        save_config(ContentConfig(replicate_to=[{"url": srv.url, "token": "tok"}],
                                  replication_min=1))
        f = write_random(tmp_path / "w.onnx", 600_000, 9)
        cid = _ok("add", str(f), "--profile", "kubo-v1", "--pin=false", "-Q").strip()
        rows = json.loads(_ok("pin", "status", "--json"))
        assert rows == []  # nothing pinned yet
        r = runner.invoke(_app(), ["pin", "add", cid])
        assert r.exit_code == 0 and f"pinned {cid}" in r.stdout
        assert remote.is_pinned(cid)
        rows = json.loads(_ok("pin", "status", "--json"))
        assert rows[0]["cid"] == cid and rows[0]["available_on"] == [srv.url] and rows[0]["ok"]
        assert f"{cid} 1/1 ok" in _ok("pin", "status", "--no-check")
    finally:
        srv.stop()
