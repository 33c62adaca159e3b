"""``webaccel add|cat|get|pin|car`` and ``webaccel models publish``.

The main ``webaccel`` app calls :func:`register` and :func:`register_models`;
``python -m webaccel.content.cli`` runs these commands alone.  Human output
goes to stderr (progress bars), results to stdout: ``add`` prints the CID as
its last line, ``--json`` prints one JSON object.
"""
from __future__ import annotations

import asyncio
import json
import sys
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.progress import (
    BarColumn,
    DownloadColumn,
    Progress,
    TextColumn,
    TimeRemainingColumn,
    TransferSpeedColumn,
)

from webaccel.content import cid as cidmod
from webaccel.content.importer import PROFILES
from webaccel.errors import WebAccelError

err = Console(stderr=True)

PeerOpt = Annotated[list[str] | None,
                    typer.Option("--peer", help="Gateway URL to fetch from (repeatable)")]
ReplicateOpt = Annotated[bool, typer.Option(help="Push to replicate_to peers / IPFS Cluster")]


def _fail(exc: WebAccelError) -> None:
    err.print(f"[red]error[/red] {exc.code}: {exc.message}")
    raise typer.Exit(1)


def _progress(total: int | None, label: str) -> Progress:
    return Progress(TextColumn(label), BarColumn(), DownloadColumn(), TransferSpeedColumn(),
                    TimeRemainingColumn(), console=err, transient=True, disable=not err.is_terminal)


def _store(peers: list[str] | None = None):  # noqa: ANN202
    from webaccel.content.config import load_config
    from webaccel.content.fetcher import Fetcher
    from webaccel.content.store import BlockStore

    cfg = load_config()
    store = BlockStore(None, disk_budget=cfg.disk_budget)
    all_peers = list(dict.fromkeys([*(peers or []), *cfg.peers]))
    if all_peers:
        store.network = Fetcher(all_peers)
    return store, cfg


def add(path: Annotated[Path, typer.Argument(exists=True, help="File or folder")],
        profile: Annotated[str, typer.Option(help=f"One of: {', '.join(PROFILES)}")] = "kubo-v0",
        only_hash: Annotated[bool, typer.Option("--only-hash", "-n",
                                                help="Print the CID, store nothing")] = False,
        pin: Annotated[bool, typer.Option("--pin", help="Pin the root in the local store")] = False,
        recursive: Annotated[bool, typer.Option("--recursive", "-r", help="Add a folder")] = False,
        hidden: Annotated[bool, typer.Option("--hidden", "-H", help="Include dot files")] = False,
        quiet: Annotated[bool, typer.Option("--quiet", "-q")] = False) -> None:
    """Add a file (or folder with -r); the CID is the last line, as `ipfs add` prints it."""
    from webaccel.content.add import add_path

    if profile not in PROFILES:
        err.print(f"[red]error[/red] unknown profile {profile!r}; use {', '.join(PROFILES)}")
        raise typer.Exit(2)
    if path.is_dir() and not recursive:
        err.print(f"[red]error[/red] {path} is a folder; use -r")
        raise typer.Exit(2)
    total = path.stat().st_size if path.is_file() else None
    store = None if only_hash else _store()[0]
    try:
        with _progress(total, "adding") as prog:
            task = prog.add_task("add", total=total)
            c = add_path(path, profile, store, only_hash, hidden=hidden, pin=pin,
                         progress=lambda n: prog.advance(task, n))
    except WebAccelError as exc:
        _fail(exc)
    if not quiet:
        err.print(f"added {c} {path.name}")
    typer.echo(str(c))


def cat(cid: str, peer: PeerOpt = None) -> None:
    """Write a file's bytes to stdout (local store, then peers)."""
    store, _ = _store(peer)

    async def run() -> None:
        out = sys.stdout.buffer
        try:
            async for piece in store.iter_file(cid):
                out.write(piece)
            out.flush()
        finally:
            if store.network is not None:
                await store.network.aclose()  # type: ignore[attr-defined]

    try:
        asyncio.run(run())
    except WebAccelError as exc:
        _fail(exc)


def get(cid: str,
        output: Annotated[Path, typer.Option("--output", "-o", help="Where to write it")],
        peer: PeerOpt = None,
        window: Annotated[int, typer.Option(help="Requests in flight over all peers")] = 32,
        timeout: Annotated[float, typer.Option(help="Seconds per block request")] = 15.0,
        as_json: Annotated[bool, typer.Option("--json")] = False) -> None:
    """Fetch CID from all peers in parallel, verified block by block, into OUTPUT."""
    from webaccel.content.fetcher import Fetcher, FetchStats

    store, cfg = _store()
    peers = list(dict.fromkeys([*(peer or []), *cfg.peers]))
    try:
        raw = cidmod.parse(cid)
    except WebAccelError as exc:
        _fail(exc)

    async def run() -> FetchStats:
        if not peers:
            # everything must be local: stream it out of the store
            from webaccel.content.fetcher import FetchStats

            tmp = output.with_name(output.name + ".partial")
            with open(tmp, "wb") as f:
                for piece in store.read_file(raw):
                    f.write(piece)
            tmp.replace(output)
            return FetchStats(bytes=output.stat().st_size)
        fetcher = Fetcher(peers, window=window, timeout=timeout)
        try:
            with _progress(None, "fetching") as prog:
                task = prog.add_task("get", total=None)

                def progress(done: int, total: int | None) -> None:
                    prog.update(task, completed=done, total=total)

                return await fetcher.fetch(raw, output, store=store, progress=progress)
        finally:
            await fetcher.aclose()

    try:
        stats = asyncio.run(run())
    except WebAccelError as exc:
        _fail(exc)
    summary: dict[str, Any] = {"cid": cidmod.to_str(raw), "output": str(output),
                               "blocks": stats.blocks, "bytes": stats.bytes,
                               "seconds": round(stats.seconds, 3),
                               "corrupt_rejected": stats.corrupt_rejected,
                               "retries": stats.retries, "hedged": stats.hedged,
                               "peers": stats.peers}
    if as_json:
        typer.echo(json.dumps(summary))
    else:
        err.print(f"fetched {stats.blocks} blocks, {stats.bytes} bytes in {stats.seconds:.2f}s; "
                  f"rejected {stats.corrupt_rejected} corrupt block(s)")
        typer.echo(str(output))


# ------------------------------------------------------------------ pin

pin_app = typer.Typer(help="Keep DAGs in the local store (GC never removes pinned blocks).",
                      no_args_is_help=True)


@pin_app.command("ls")
def pin_ls(as_json: Annotated[bool, typer.Option("--json")] = False) -> None:
    store, _ = _store()
    pins = store.pins()
    if as_json:
        typer.echo(json.dumps(pins))
    else:
        for p in pins:
            typer.echo(f"{p['cid']} recursive" + (f" {p['name']}" if p.get("name") else ""))


@pin_app.command("add")
def pin_add(cid: str, peer: PeerOpt = None,
            name: Annotated[str | None, typer.Option(help="A label for the pin")] = None,
            replicate: ReplicateOpt = True) -> None:
    """Pin CID (fetching missing blocks from peers) and replicate it when configured."""
    store, cfg = _store(peer)

    async def run() -> dict[str, Any] | None:
        try:
            await store.fetch_dag(cid)
            store.pin(cid, name=name)
            if replicate and (cfg.replicate_to or cfg.cluster):
                from webaccel.content.replication import Replicator

                rep = Replicator(store, cfg)
                try:
                    return await rep.replicate(cid, name=name)
                finally:
                    await rep.aclose()
            return None
        finally:
            if store.network is not None:
                await store.network.aclose()  # type: ignore[attr-defined]

    try:
        report = asyncio.run(run())
    except WebAccelError as exc:
        _fail(exc)
    if report:
        err.print(f"replication: {json.dumps(report)}")
    typer.echo(f"pinned {cidmod.to_str(cidmod.parse(cid))}")


@pin_app.command("rm")
def pin_rm(cid: str,
           gc: Annotated[bool, typer.Option("--gc", help="Delete unpinned blocks now")] = False,
           ) -> None:
    store, _ = _store()
    try:
        if not store.unpin(cid):
            err.print("not pinned")
            raise typer.Exit(1)
    except WebAccelError as exc:
        _fail(exc)
    if gc:
        r = store.gc()
        err.print(f"gc removed {r.removed_blocks} blocks ({r.removed_bytes} bytes)")
    typer.echo(f"unpinned {cid}")


@pin_app.command("status")
def pin_status(check: Annotated[bool, typer.Option("--check/--no-check",
                                                  help="Ask peers now")] = True,
               deep: Annotated[bool, typer.Option(help="Fetch and verify every block")] = False,
               as_json: Annotated[bool, typer.Option("--json")] = False) -> None:
    """For each pin: on how many peers it is retrievable, against replication_min."""
    from webaccel.content.replication import Replicator

    store, cfg = _store()

    async def run() -> list[dict[str, Any]]:
        rep = Replicator(store, cfg)
        try:
            if check:
                await rep.monitor(deep=deep)
            return rep.last_status()
        finally:
            await rep.aclose()

    rows = asyncio.run(run())
    if as_json:
        typer.echo(json.dumps(rows))
        return
    for r in rows:
        mark = "ok" if r["ok"] else "UNDER-REPLICATED"
        typer.echo(f"{r['cid']} {len(r['available_on'])}/{r['replication_min']} {mark}")


# ------------------------------------------------------------------ car

car_app = typer.Typer(help="CAR v1 export and import.", no_args_is_help=True)


@car_app.command("export")
def car_export(cid: str, output: Annotated[Path | None, typer.Option("--output", "-o")] = None,
               peer: PeerOpt = None) -> None:
    """Write the DAG at CID as a CAR v1 (stdout without -o)."""
    from webaccel.content.car import encode_header, encode_section

    store, _ = _store(peer)
    raw = cidmod.parse(cid)

    async def run() -> None:
        out = open(output, "wb") if output else sys.stdout.buffer  # noqa: SIM115
        try:
            out.write(encode_header([raw]))
            async for c, data in store.walk(raw):
                out.write(encode_section(c, data))
        finally:
            if output:
                out.close()
            if store.network is not None:
                await store.network.aclose()  # type: ignore[attr-defined]

    try:
        asyncio.run(run())
    except WebAccelError as exc:
        _fail(exc)


@car_app.command("import")
def car_import(path: Annotated[Path, typer.Argument(exists=True)],
               pin: Annotated[bool, typer.Option("--pin/--no-pin")] = True) -> None:
    """Verify and store every block of a CAR v1; pin its roots. Prints the roots."""
    from webaccel.content.car import CarBlock, CarHeader, read_car

    store, _ = _store()
    roots: list[bytes] = []
    n = 0
    try:
        with open(path, "rb") as f:
            for ev in read_car(iter(lambda: f.read(1 << 20), b"")):
                if isinstance(ev, CarHeader):
                    roots = ev.roots
                elif isinstance(ev, CarBlock):
                    store.put(ev.cid, ev.data)
                    n += 1
        if pin:
            for r in roots:
                store.pin(r)
    except WebAccelError as exc:
        _fail(exc)
    err.print(f"imported {n} blocks")
    for r in roots:
        typer.echo(cidmod.to_str(r))


# ------------------------------------------------------------------ models publish


def publish(name: str, path: Annotated[Path, typer.Argument(exists=True)],
            profile: Annotated[str, typer.Option()] = "unixfs-v1-2025",
            note: Annotated[str | None, typer.Option(help="What changed")] = None,
            replicate: ReplicateOpt = True) -> None:
    """Add PATH, pin it and make it the newest version of NAME. Prints the CID last."""
    from webaccel.content.add import add_path
    from webaccel.content.names import NameRegistry

    store, cfg = _store()
    try:
        c = add_path(path, profile, store, pin=True)
        size = path.stat().st_size if path.is_file() else None
        v = NameRegistry().publish(name, c, size=size, profile=profile, note=note)
        if replicate and (cfg.replicate_to or cfg.cluster):
            from webaccel.content.replication import Replicator

            async def run() -> dict[str, Any]:
                rep = Replicator(store, cfg)
                try:
                    return await rep.replicate(c, name=name)
                finally:
                    await rep.aclose()

            err.print(f"replication: {json.dumps(asyncio.run(run()))}")
    except WebAccelError as exc:
        _fail(exc)
    err.print(f"{name} v{v.version} -> {c}")
    typer.echo(str(c))


def resolve(name: str, version: Annotated[int | None, typer.Option()] = None) -> None:
    """Print the CID NAME resolves to (newest, or the pinned/asked version)."""
    from webaccel.content.names import NameRegistry

    try:
        typer.echo(NameRegistry().resolve(name, version))
    except WebAccelError as exc:
        _fail(exc)


def register(app: typer.Typer) -> None:
    app.command("add")(add)
    app.command("cat")(cat)
    app.command("get")(get)
    app.add_typer(pin_app, name="pin")
    app.add_typer(car_app, name="car")


def register_models(models_app: typer.Typer) -> None:
    models_app.command("publish")(publish)
    models_app.command("resolve")(resolve)


def build_app() -> typer.Typer:
    app = typer.Typer(help="webaccel content commands", no_args_is_help=True)
    register(app)
    models = typer.Typer(help="Model names and versions", no_args_is_help=True)
    register_models(models)
    app.add_typer(models, name="models")
    return app


if __name__ == "__main__":
    build_app()()
