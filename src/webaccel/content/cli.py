"""``webaccel add|cat|get|pin|car`` and ``webaccel models publish``.

The main ``webaccel`` app calls :func:`register` and :func:`register_models`;
``python -m webaccel.content.cli`` runs these commands alone.  Human output
goes to stderr (progress bars), results to stdout: ``add`` prints the CID as
its last line, ``--json`` prints one JSON object.
"""
from __future__ import annotations

import asyncio
import dataclasses
import json
import os
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
from typer.core import TyperCommand

from webaccel.content import cid as cidmod
from webaccel.content.add import STDIN, Added
from webaccel.content.errors import AddInputError, NotAFileError
from webaccel.content.importer import PROFILES, Profile
from webaccel.content.resolve import parse_ipfs_path, segments
from webaccel.errors import BadRequestError, WebAccelError

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


# Kubo's boolean options take ``--pin=false`` / ``--raw-leaves=true``; click's
# flags do not, so the add command rewrites those spellings to --[no-]NAME first.
_KUBO_BOOLS = {"pin", "raw-leaves", "recursive", "hidden", "quiet", "quieter", "progress",
               "wrap-with-directory", "only-hash"}


class KuboBoolCommand(TyperCommand):
    def parse_args(self, ctx: Any, args: list[str]) -> list[str]:
        out = []
        for a in args:
            name, eq, value = a.partition("=")
            if eq and name.startswith("--") and name[2:] in _KUBO_BOOLS \
                    and value.lower() in ("true", "false"):
                a = name if value.lower() == "true" else f"--no-{name[2:]}"
            out.append(a)  # anything else ("--pin=maybe") is click's usage error
        return super().parse_args(ctx, out)


def kubo_profile(base: str, cid_version: int | None, raw_leaves: bool | None,
                 chunker: str | None) -> Profile:
    """The import settings of ``ipfs add`` flags on top of a profile.

    As Kubo 0.22: ``--cid-version 1`` implies raw leaves unless
    ``--raw-leaves=false``; ``--raw-leaves`` alone keeps CIDv0 for the inner
    nodes (raw leaves are CIDv1); ``--chunker size-N`` (1 <= N <= 1 MiB).
    """
    if base not in PROFILES:
        raise AddInputError(f"unknown profile {base!r}; use one of {', '.join(PROFILES)}")
    p = PROFILES[base]
    changes: dict[str, Any] = {}
    if cid_version is not None:
        if cid_version not in (0, 1):
            raise AddInputError(f"unknown CID version {cid_version}; use 0 or 1")
        changes["cid_version"] = cid_version
        changes["raw_leaves"] = cid_version == 1
    if raw_leaves is not None:
        changes["raw_leaves"] = raw_leaves
    if chunker is not None and chunker not in ("", "default"):
        if not chunker.startswith("size-"):
            raise AddInputError(
                f"chunker {chunker!r} is not supported here; use size-N "
                "(rabin and buzhash chunking are not implemented)")
        try:
            size = int(chunker.split("-")[1])
        except ValueError:
            raise AddInputError(f"chunker {chunker!r}: size-N needs a number of bytes") from None
        if size <= 0:
            raise AddInputError("chunker size must be greater than 0")
        if size > 1_048_576:
            raise AddInputError(
                "chunker parameters may not exceed the maximum chunk size of 1048576")
        changes["chunk_size"] = size
    elif chunker in ("", "default"):
        changes["chunk_size"] = 262_144
    if not changes:
        return p
    p = dataclasses.replace(p, **changes)
    return dataclasses.replace(p, name="custom" if p not in PROFILES.values() else p.name)


def add(paths: Annotated[list[str] | None, typer.Argument(
            help="Files, folders (with -r) or - for stdin; stdin when none is given",
            show_default=False)] = None,
        profile: Annotated[str, typer.Option(help=f"One of: {', '.join(PROFILES)}")] = "kubo-v0",
        cid_version: Annotated[int | None, typer.Option(
            "--cid-version", help="CID version (0 or 1); 1 implies --raw-leaves")] = None,
        raw_leaves: Annotated[bool | None, typer.Option(
            "--raw-leaves/--no-raw-leaves", help="Leaves as raw blocks (--raw-leaves=false)",
            show_default=False)] = None,
        chunker: Annotated[str | None, typer.Option(
            "--chunker", "-s", help="size-N (bytes), default size-262144")] = None,
        only_hash: Annotated[bool, typer.Option("--only-hash/--no-only-hash", "-n",
                                                help="Print the CIDs, store nothing")] = False,
        pin: Annotated[bool, typer.Option("--pin/--no-pin",
                                          help="Pin the roots (--pin=false: don't)")] = True,
        recursive: Annotated[bool, typer.Option("--recursive/--no-recursive", "-r",
                                                help="Add folders")] = False,
        hidden: Annotated[bool, typer.Option("--hidden/--no-hidden", "-H",
                                             help="Include dot files")] = False,
        wrap: Annotated[bool, typer.Option("--wrap-with-directory/--no-wrap-with-directory",
                                           "-w", help="Wrap the arguments in a folder")] = False,
        quiet: Annotated[bool, typer.Option("--quiet/--no-quiet", "-q",
                                            help="Only the CIDs, one per line")] = False,
        quieter: Annotated[bool, typer.Option("--quieter/--no-quieter", "-Q",
                                              help="Only the root CID")] = False,
        progress: Annotated[bool | None, typer.Option(
            "--progress/--no-progress", "-p", help="Progress bar on stderr",
            show_default=False)] = None,
        stdin_name: Annotated[str, typer.Option(help="Name of the stdin entry (with -w)")] = "",
        ) -> None:
    """Add files or folders as `ipfs add` does; prints `added <cid> <name>` lines.

    The root's line comes last (-Q prints only the root CID, -q only CIDs).
    Roots are pinned unless --pin=false.
    """
    from webaccel.content.add import add_paths

    try:
        prof = kubo_profile(profile, cid_version, raw_leaves, chunker)
    except WebAccelError as exc:
        err.print(f"[red]error[/red] {exc.code}: {exc.message}")
        raise typer.Exit(2) from None
    args = list(paths or [STDIN])
    for a in args:
        if a != STDIN and os.path.isdir(a) and not os.path.islink(a) and not recursive:
            err.print(f"[red]error[/red] {a} is a folder; use -r")
            raise typer.Exit(2)
    show = progress if progress is not None else (err.is_terminal and not quiet and not quieter)
    total = sum(os.path.getsize(a) for a in args
                if a != STDIN and os.path.isfile(a) and not os.path.islink(a)) or None
    lines: list[str] = []

    def emit(a: Added) -> None:
        if quieter:
            lines.append(a.cid_str)
            return
        typer.echo(a.cid_str if quiet else f"added {a.cid_str} {a.name}")

    store = None if only_hash else _store()[0]
    try:
        with Progress(TextColumn("adding"), BarColumn(), DownloadColumn(), TransferSpeedColumn(),
                      console=err, transient=True, disable=not show) as prog:
            task = prog.add_task("add", total=total)

            def run() -> list[bytes]:
                roots = add_paths(args, prof, None if store is None else store.put_trusted,
                                  recursive=recursive, hidden=hidden, wrap=wrap,
                                  stdin_name=stdin_name, on_added=emit,
                                  progress=lambda n: prog.advance(task, n))
                return [r.cid for r in roots]

            if store is None:
                run()
            else:
                with store.gc_paused():
                    for root in run():
                        if pin:
                            store.pin(root)
                store.enforce_budget()
    except WebAccelError as exc:
        _fail(exc)
    except OSError as exc:
        _fail(AddInputError(f"cannot read {exc.filename}: {exc.strerror}"))
    if quieter and lines:
        typer.echo(lines[-1])


def cat(paths: Annotated[list[str], typer.Argument(help="CID, CID/path or /ipfs/CID/path")],
        peer: PeerOpt = None,
        offset: Annotated[int, typer.Option("--offset", "-o", help="Byte offset to begin at",
                                            min=0)] = 0,
        length: Annotated[int | None, typer.Option("--length", "-l",
                                                   help="Most bytes to write", min=0)] = None,
        ) -> None:
    """Write files' bytes to stdout (local store, then peers), one after another;
    --offset and --length apply to them all together, as in `ipfs cat`."""
    store, _ = _store(peer)

    async def target_of(a: str) -> tuple[bytes, int]:
        root, path = parse_ipfs_path(a)
        target = (await store.resolve(root, path)).target if path else root
        node = await store.node(target)
        if node.kind != "file":
            raise NotAFileError(
                f"{a} is a {node.kind}, not a file: use webaccel get to write it out")
        return target, node.size

    async def run() -> None:
        out = sys.stdout.buffer
        skip, left = offset, length
        try:
            items = [await target_of(a) for a in paths]
            for target, size in items:
                if left is not None and left <= 0:
                    break
                if skip >= size:
                    skip -= size
                    continue
                end = size if left is None else min(size, skip + left)
                async for piece in store.iter_file(target, skip, end):
                    out.write(piece)
                if left is not None:
                    left -= end - skip
                skip = 0
            out.flush()
        finally:
            if store.network is not None:
                await store.network.aclose()  # type: ignore[attr-defined]

    try:
        asyncio.run(run())
    except WebAccelError as exc:
        _fail(exc)


def get(path: Annotated[str, typer.Argument(help="CID, CID/path or /ipfs/CID/path")],
        output: Annotated[Path | None, typer.Option(
            "--output", "-o", help="Where to write it (default: the path's last name)")] = None,
        peer: PeerOpt = None,
        window: Annotated[int, typer.Option(help="Requests in flight over all peers")] = 32,
        timeout: Annotated[float, typer.Option(help="Seconds per block request")] = 15.0,
        as_json: Annotated[bool, typer.Option("--json")] = False) -> None:
    """Write a file, folder or symlink: from the local store, else from all peers in
    parallel, verified block by block.  Written under a temporary name beside
    OUTPUT and renamed at the end: a failure leaves nothing behind."""
    from webaccel.content.fetcher import Fetcher, FetchStats

    store, cfg = _store()
    peers = list(dict.fromkeys([*(peer or []), *cfg.peers]))
    try:
        root, sub = parse_ipfs_path(path)
    except WebAccelError as exc:
        _fail(exc)
    out = output if output is not None else Path(segments(sub)[-1] if sub else cidmod.to_str(root))
    if out.name in ("", ".", ".."):
        _fail(BadRequestError(f"-o {out} names no file or folder to write; give a new name, "
                              "e.g. -o ./copy"))

    async def run() -> tuple[bytes, FetchStats]:
        fetcher = Fetcher(peers, window=window, timeout=timeout, local_only=not peers)
        try:
            if sub:
                saved = store.network
                store.network = fetcher if peers else None
                try:
                    target = (await store.resolve(root, sub)).target
                finally:
                    store.network = saved
            else:
                target = root
            with _progress(None, "fetching") as prog:
                task = prog.add_task("get", total=None)

                def progress(done: int, total: int | None) -> None:
                    prog.update(task, completed=done, total=total)

                return target, await fetcher.fetch(target, out, store=store, progress=progress)
        finally:
            await fetcher.aclose()

    try:
        target, stats = asyncio.run(run())
    except WebAccelError as exc:
        _fail(exc)
    summary: dict[str, Any] = {"cid": cidmod.to_str(target), "output": str(out),
                               "blocks": stats.blocks, "local_blocks": stats.local_blocks,
                               "bytes": stats.bytes, "seconds": round(stats.seconds, 3),
                               "corrupt_rejected": stats.corrupt_rejected,
                               "retries": stats.retries, "hedged": stats.hedged,
                               "peers": stats.peers}
    if as_json:
        typer.echo(json.dumps(summary))
    else:
        if stats.blocks:
            err.print(f"fetched {stats.blocks} blocks, {stats.bytes} bytes in "
                      f"{stats.seconds:.2f}s; rejected {stats.corrupt_rejected} corrupt block(s)")
        typer.echo(f"Saving file(s) to {out}")


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
    """Write the DAG at CID as a CAR v1 (stdout without -o).

    With -o the CAR is written under a temporary name beside OUTPUT and
    renamed once complete: a failed export leaves no file."""
    from webaccel.content.car import encode_header, encode_section

    store, _ = _store(peer)
    from webaccel.content.fetcher import temp_beside

    try:
        raw = cidmod.parse(cid)
    except WebAccelError as exc:
        _fail(exc)

    async def run() -> None:
        tmp = temp_beside(output) if output else None
        out = open(tmp, "xb") if tmp else sys.stdout.buffer  # noqa: SIM115
        try:
            out.write(encode_header([raw]))
            async for c, data in store.walk(raw):
                out.write(encode_section(c, data))
            if tmp is not None:
                out.close()
                os.replace(tmp, output)  # type: ignore[arg-type]
        finally:
            if tmp is not None:
                out.close()
                if os.path.lexists(tmp):  # failed: nothing half-written is left
                    os.unlink(tmp)
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
    app.command("add", cls=KuboBoolCommand)(add)
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
