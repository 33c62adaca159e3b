"""The ``webaccel`` command."""

from __future__ import annotations

import asyncio
import importlib
import json
import os
import statistics
import sys
import time
from collections.abc import Callable
from functools import wraps
from pathlib import Path
from typing import Any

import typer
from rich.table import Table

from webaccel.errors import WebAccelError
from webaccel.progress import quiet_third_party, show_on_stderr, silence_loggers, stage
from webaccel.run_output import plain, print_result, show
from webaccel.run_route import jsonable
from webaccel.terminal import LazyConsole, make_console

app = typer.Typer(
    help="Run ONNX models in a pool of web browsers.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
)
models_app = typer.Typer(help="The model registry: list, show, prepare.", no_args_is_help=True)
app.add_typer(models_app, name="models")
# rich on a terminal; plain, unwrapped lines when piped or logged (webaccel.terminal)
console = LazyConsole()
err_console = LazyConsole(stderr=True)


def typed_errors(fn: Callable[..., Any]) -> Callable[..., Any]:
    """Print webaccel errors as one clear line (or JSON) instead of a traceback."""

    @wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return fn(*args, **kwargs)
        except WebAccelError as exc:
            if kwargs.get("as_json"):
                print(json.dumps({"error": exc.to_dict()}))
            else:
                err_console.print(f"[bold red]error[/] [{exc.code}] {exc.message}", highlight=False)
            raise typer.Exit(2) from None

    return wrapper


def _plain(value: Any, digits: int = 4) -> Any:
    """Numbers as people read them (``0.9731``, not ``np.float64(0.97314...)``)."""
    return plain(jsonable(value), digits)


def _show(key: str, value: Any) -> None:
    show(key, jsonable(value), _console_line)


def _ensure_built(spec: Any, precision: str) -> None:
    """Build the model files NAME needs (once), showing a stage line if it takes a while."""
    if spec.build_parts is None and spec.onnx_path(precision).is_file():
        return
    with stage(f"{spec.name}: building {precision} (first use)", after_s=1.0), quiet_third_party():
        spec.ensure_parts(precision)


def _where(result: dict[str, Any]) -> dict[str, Any]:
    keys = ("browser", "backend", "precision", "fallback_reason", "latency_ms", "load_ms")
    return {k: result[k] for k in keys if k in result}


@app.command()
@typed_errors
def run(
    model: str = typer.Argument(..., help="registered model name (webaccel models list)"),
    input_text: str = typer.Argument(
        ...,
        metavar="INPUT",
        help="text (minilm), a prompt (smollm2), an image file (nsfw-cnn, vit-saliency) "
        "or an audio file (whisper-tiny-en)",
    ),
    backend: str = typer.Option("auto", help="auto|webgpu|webnn|wasm"),
    browser: str = typer.Option("auto", help="auto|chromium|firefox|node-webgpu"),
    precision: str = typer.Option(
        "auto",
        help="auto|fp32|fp16|int8|int4|mixed, or a transformers.js dtype "
        "(q8, uint8 -> int8; q4, q4f16 -> int4)",
    ),
    max_tokens: int = typer.Option(256, help="generation: the most tokens to make"),
    temperature: float = typer.Option(
        None, help="generation: 0 = greedy (default: the model's generation config)"
    ),
    top_p: float = typer.Option(None, help="generation (default: the model's generation config)"),
    seed: int = typer.Option(None, help="generation: sampling seed"),
    raw: bool = typer.Option(False, "--raw", help="generation: INPUT is the whole prompt (no "
                             "chat template)"),
    timeout: float = typer.Option(
        600.0, help="seconds the request may take, first use (model load) included"
    ),
    as_json: bool = typer.Option(False, "--json", help="print one JSON object"),
    stages: int = typer.Option(
        0, "--stages", help="split into N pipeline stages, each on its own browser (0: whole)"
    ),
    local: bool = typer.Option(
        False, "--local", help="start a browser here even when a webaccel serve is running"
    ),
) -> None:
    """Run MODEL on INPUT in a headless browser and print the result.

    Text generation streams tokens to stdout as they are made; --json prints one
    object at the end, with usage.  Stage lines (building, browser start, model
    load) go to stderr.
    """
    from webaccel.dtypes import to_precision
    from webaccel.models import registry

    show_on_stderr()
    spec = registry.get(model)
    variant = to_precision(precision)
    default_browser = "chromium" if browser == "auto" else browser
    options: dict[str, Any] = {"timeout": timeout}
    if variant is not None:
        options["precision"] = variant
    platform = None if backend == "auto" else backend
    pinned = None if browser == "auto" else browser
    # As `ipfs` talks to its daemon: a running `webaccel serve` answers with its warm
    # browsers (streamed generation and --stages still start their own here).
    server = None if local or stages or spec.task == "text_generation" else _live_server()
    if server is not None:
        with stage(f"{spec.name}: on the running webaccel serve at {server.url}", after_s=2.0):
            result = _run_on_server(server, spec.name, input_text, options, platform, pinned,
                                    timeout)
    else:
        result = _run_here(spec, input_text, variant, default_browser, options, platform,
                           pinned, stages, max_tokens, temperature, top_p, seed, raw, as_json,
                           timeout)
        if result is None:  # generation printed as it went
            return
    print_result(jsonable(result), as_json=as_json, emit=_console_line)


def _console_line(line: str) -> None:
    console.print(line, highlight=False, markup=False)


def _live_server() -> Any:
    """The running ``webaccel serve`` of this WEBACCEL_HOME (webaccel.admin), or None."""
    from webaccel import admin
    from webaccel.errors import ServerNotRunningError

    try:
        return admin.running_server()
    except ServerNotRunningError:
        return None


def _run_on_server(server: Any, model: str, input_text: str, options: dict[str, Any],
                   platform: str | None, browser: str | None, timeout: float) -> dict[str, Any]:
    """POST /api/v0/run (webaccel.run_route): a file argument travels as its bytes."""
    import base64

    from webaccel import admin

    path = Path(input_text)
    value: Any = input_text
    if len(input_text) < 4096 and path.is_file():
        value = {"file": base64.b64encode(path.read_bytes()).decode(), "suffix": path.suffix}
    target = admin.Target(url=admin.local_url(server.url), key=server.key,
                          source=f"the state file {server.path} (pid {server.pid})",
                          key_source=f"the state file {server.path}")
    with admin.AdminClient(target, timeout=timeout + 10) as client:
        return client.run({"model": model, "input": value, "options": options,
                           "platform": platform, "browser": browser})


def _run_here(spec: Any, input_text: str, variant: str | None, default_browser: str,
              options: dict[str, Any], platform: str | None, pinned: str | None, stages: int,
              max_tokens: int, temperature: float | None, top_p: float | None,
              seed: int | None, raw: bool, as_json: bool, timeout: float) -> Any:
    """``webaccel run`` with a browser of its own; None when generation printed already."""
    from webaccel.api import WebAccelerator

    _ensure_built(spec, variant or "fp32")
    with WebAccelerator(
        default_browser=default_browser, default_platform="auto", max_connections=max(1, stages)
    ) as acc:
        with stage(f"starting a headless {default_browser}", after_s=2.0):
            acc.start_worker()
        if spec.task == "text_generation" and not stages:
            _run_generation(acc, spec, input_text, variant, platform, max_tokens,
                            temperature, top_p, seed, raw, as_json, timeout)
            return None
        with stage(f"{spec.name}: loading into the page and running", after_s=2.0):
            if stages:  # webaccel.sharding: one browser per stage
                from webaccel.sharding.run import run_split

                return run_split(acc, spec.name, input_text, stages=stages,
                                 precision=variant or "fp32", platform=platform, browser=pinned)
            return acc.accelerate(spec.name, input_text, options, platform=platform,
                                  browser=pinned)

def _run_generation(
    acc: Any,
    spec: Any,
    prompt: str,
    variant: str | None,
    platform: str | None,
    max_tokens: int,
    temperature: float | None,
    top_p: float | None,
    seed: int | None,
    raw: bool,
    as_json: bool,
    timeout: float,
) -> None:
    from webaccel.generation import load_generation_model

    _, gm, _ = load_generation_model(spec.name, variant or "fp32")
    # As the OpenAI server: what the command line leaves out, the model's generation config sets.
    params: dict[str, Any] = {**gm.sampling_defaults, "max_tokens": max_tokens}
    for key, value in (("temperature", temperature), ("top_p", top_p), ("seed", seed)):
        if value is not None:
            params[key] = value
    chat = not raw and bool(gm.meta.get("chat_template"))
    prompt_arg: Any = [{"role": "user", "content": prompt}] if chat else prompt
    stream = acc.stream(spec.name, prompt_arg, platform=platform,
                        precision=variant or "fp32", timeout=timeout, **params)
    first = True
    with stage(f"{spec.name}: loading into the page", after_s=2.0):
        pieces = iter(stream)
        try:
            head = next(pieces)
        except StopIteration:
            head = ""
    try:
        for piece in _chain(head, pieces):
            if not as_json:
                sys.stdout.write(piece)
                sys.stdout.flush()
            first = False
    finally:
        stream.close()
    result = stream.result
    if as_json:
        out = {
            "text": result.text if result else "",
            "model": spec.name,
            "finish_reason": result.finish_reason if result else None,
            "usage": result.usage if result else None,
            "sampling": {k: params.get(k) for k in ("temperature", "top_p", "top_k", "seed")},
            "browser": result.browser if result else None,
            "backend": result.backend if result else None,
            "stats": jsonable(result.stats) if result else None,
        }
        print(json.dumps(out, ensure_ascii=False))
        return
    if not first or (result and result.text):
        sys.stdout.write("\n")
    if result is not None:
        tps = result.stats.get("decode_tokens_per_s")
        err_console.print(
            f"{result.usage['completion_tokens']} tokens ({result.finish_reason}) on "
            f"{result.browser}/{result.backend}"
            + (f", {tps:.1f} tokens/s" if tps else ""),
            highlight=False,
            markup=False,
        )


def _chain(head: str, rest: Any) -> Any:
    if head:
        yield head
    yield from rest


@models_app.command("list")
def models_list(as_json: bool = typer.Option(False, "--json")) -> None:
    """List registered models."""
    from webaccel.models import registry

    specs = registry.all_models()
    if as_json:
        print(
            json.dumps(
                [
                    {
                        "name": s.name,
                        "task": s.task,
                        "source": s.source,
                        "prepared": _prepared(s),
                    }
                    for s in specs
                ]
            )
        )
        return
    table = Table("name", "task", "source", "prepared")
    for s in specs:
        table.add_row(s.name, s.task, s.source, "yes" if _prepared(s) else "no")
    console.print(table)


def _prepared(spec: Any) -> bool:
    """Its fp32 variant is built: model.onnx, or the graphs of a multi-graph model
    (Whisper's encoder.onnx and decoder.onnx: it has no model.onnx), as `models show`."""
    return bool(_variant_files(spec, "fp32"))


def _variant_files(spec: Any, precision: str) -> list[Path]:
    """The built ONNX files of one variant (one file, or each graph of a multi-graph model)."""

    folder = Path(spec.onnx_path(precision)).parent
    if not folder.is_dir():
        return []
    return sorted(p for p in folder.glob("*.onnx") if not p.name.startswith("."))


def _measured_accuracy(model: str) -> dict[tuple[str, int], dict[str, Any]]:
    """The latest accuracy measured per (precision, bytes) by `webaccel models quantize`."""
    from webaccel.metrics.store import default_path, read_query

    path = default_path()
    if not path.exists():
        return {}
    try:
        rows = read_query(
            path,
            "SELECT precision, bytes, metric, accuracy, latency_ms, ts FROM variants "
            "WHERE model = ? ORDER BY ts",
            [model],
        )
    except Exception:  # noqa: BLE001 - a busy or older metrics file: show no accuracy
        return {}
    return {(r["precision"], int(r["bytes"] or 0)): r for r in rows}


def variants_info(spec: Any) -> list[dict[str, Any]]:
    """Each built variant: precision, path(s), bytes, and accuracy against fp32 where
    `webaccel models quantize` measured this very file (same size)."""
    from webaccel.dtypes import DTYPE_TO_PRECISION
    from webaccel.models import registry

    measured = _measured_accuracy(spec.name)
    out = []
    for precision in registry.PRECISIONS:
        files = _variant_files(spec, precision)
        if not files:
            continue
        nbytes = sum(f.stat().st_size for f in files)
        row = measured.get((precision, nbytes))
        out.append({
            "precision": precision,
            "dtypes": [d for d, p in DTYPE_TO_PRECISION.items() if p == precision],
            "path": str(files[0]) if len(files) == 1 else str(files[0].parent),
            "files": {f.stem: str(f) for f in files},
            "bytes": nbytes,
            "accuracy": None if row is None else {
                "metric": row["metric"],
                "mean": row["accuracy"],
                "native_ms": row["latency_ms"],
                "measured_at": str(row["ts"]),
            },
        })
    return out


@models_app.command("show")
@typed_errors
def models_show(name: str, as_json: bool = typer.Option(False, "--json")) -> None:
    """Show one model: task, source, and each built variant (precision, path, bytes, accuracy)."""
    from webaccel.models import registry

    spec = registry.get(name)
    variants = variants_info(spec)
    info = {
        "name": spec.name,
        "task": spec.task,
        "source": spec.source,
        "description": spec.description,
        "aliases": list(spec.aliases),
        "variants": variants,
        # kept for older readers: precision -> file / bytes
        "files": {v["precision"]: v["path"] for v in variants},
        "bytes": {v["precision"]: v["bytes"] for v in variants},
    }
    if as_json:
        print(json.dumps(info))
        return
    for key in ("name", "task", "source", "description", "aliases"):
        _show(key, info[key])
    if not variants:
        console.print(f"variants: none built yet (webaccel models prepare {spec.name})",
                      highlight=False, markup=False)
        return
    table = Table("precision", "MB", "accuracy vs fp32", "path", title="variants")
    for v in variants:
        acc = v["accuracy"]
        table.add_row(
            v["precision"],
            f"{v['bytes'] / 1e6:.1f}",
            "-" if acc is None else f"{acc['metric']} {acc['mean']:.4f}",
            v["path"],
        )
    console.print(table)


@models_app.command("prepare")
@typed_errors
def models_prepare(
    name: str,
    precision: str = typer.Option("fp32", help="fp32|fp16|int8|int4|mixed or a transformers.js "
                                  "dtype (q8, uint8, q4, q4f16...)"),
    quiet: bool = typer.Option(False, "--quiet"),
) -> None:
    """Build (once) and cache the ONNX file(s) of NAME at PRECISION; prints each path."""
    from webaccel.dtypes import to_precision
    from webaccel.models import registry

    show_on_stderr()
    spec = registry.get(name)
    variant = to_precision(precision) or "fp32"
    start = time.perf_counter()
    with stage(f"{spec.name}: building {variant}", after_s=1.0), quiet_third_party():
        parts = spec.ensure_parts(variant)
    if quiet:
        return
    took = time.perf_counter() - start
    for part, path in parts.items():
        label = f"{spec.name} {variant}" + ("" if part == "model" else f" {part}")
        console.print(
            f"{label}: {path} ({path.stat().st_size / 1e6:.1f} MB"
            + (f", {took:.1f} s)" if took >= 1 else ")"),
            highlight=False,
            markup=False,
        )


@models_app.command("quantize")
@typed_errors
def models_quantize(
    name: str,
    precision: list[str] = typer.Option(  # noqa: B008 - typer's way to declare a repeatable option
        ["fp16", "int8", "int4", "mixed"], "--precision", "-p", help="fp16|int8|int4|mixed (repeat)"
    ),
    as_json: bool = typer.Option(False, "--json"),
) -> None:
    """Build precision variants of NAME and measure each against fp32 (size, accuracy, speed)."""
    from webaccel.metrics.store import MetricsStore
    from webaccel.models import calibration, registry
    from webaccel.models import precision as variants

    spec = registry.get(name)
    paths = {"fp32": spec.ensure_onnx("fp32")}
    for p in precision:
        with console.status(f"building {name} {p}"):
            paths[p] = spec.ensure_onnx(p)
    with console.status("measuring accuracy and native latency against fp32"):
        reports = variants.measure_variants(
            paths["fp32"],
            paths,
            calibration.feeds_for(spec),
            metric=calibration.metric_for(spec.task),
        )
    store = MetricsStore()
    try:
        for rep in reports:
            store.record_variant(
                spec.name,
                rep.precision,
                nbytes=rep.bytes,
                precision=rep.precision,
                metric=rep.metric,
                accuracy=rep.accuracy_mean,
                latency_ms=rep.latency_ms.get("median"),
            )
    finally:
        store.close()
    rows = [variants.summary(r) for r in reports]
    if as_json:
        print(json.dumps(rows))
        return
    table = Table(
        "precision",
        "MB",
        "x fp32",
        "metric",
        "mean",
        "worst",
        "native ms",
        title=f"{name} variants",
    )
    for r in reports:
        table.add_row(
            r.precision,
            f"{r.bytes / 1e6:.1f}",
            f"{r.ratio_to_fp32:.3f}",
            r.metric,
            f"{r.accuracy_mean:.4f}",
            f"{r.accuracy_worst:.4f}",
            f"{r.latency_ms.get('median', float('nan')):.1f}",
        )
    console.print(table)


@app.command()
@typed_errors
def doctor(as_json: bool = typer.Option(False, "--json")) -> None:
    """What each installed browser can run here, and what to install or set when missing."""
    from webaccel.doctor import diagnose, render

    report = asyncio.run(diagnose())
    if as_json:
        print(json.dumps(report))
    else:
        render(report, make_console())


SENTENCES = [
    "A man is playing a guitar on stage.",
    "Someone performs music with a guitar.",
    "The stock market fell sharply on Monday.",
    "Les marchés financiers ont chuté lundi.",
    "天気が良いので散歩に行きます。",
    "The weather is nice, so I am going for a walk.",
]


@app.command()
@typed_errors
def demo(runs: int = typer.Option(20, help="warm runs to time")) -> None:
    """Embed a few sentences in a headless browser and print their similarities."""
    from webaccel.api import WebAccelerator

    with console.status("starting a headless browser worker"):
        start = time.perf_counter()
        acc = WebAccelerator(max_connections=1)
    with acc:
        first = acc.accelerate("minilm", SENTENCES)
        startup_s = time.perf_counter() - start
        warm = []
        with console.status(f"timing {runs} warm runs"):
            for _ in range(runs):
                warm.append(acc.accelerate("minilm", SENTENCES)["latency_ms"])
    emb = first["embeddings"]
    sims = emb @ emb.T
    table = Table(title="cosine similarity (all-MiniLM-L6-v2 in the browser)")
    table.add_column("")
    for i in range(len(SENTENCES)):
        table.add_column(str(i), justify="right")
    for i, s in enumerate(SENTENCES):
        table.add_row(f"{i} {s[:38]}", *[f"{sims[i, j]:.2f}" for j in range(len(SENTENCES))])
    console.print(table)
    console.print(
        f"ran in [bold]{first['browser']}[/] on [bold]{first['backend']}[/] "
        f"({first['precision']}), requested {first['requested_backend']}"
    )
    if first["fallback_reason"]:
        console.print(f"fallback: {first['fallback_reason']}", highlight=False)
    console.print(
        f"start-up + first batch: {startup_s:.1f} s (model load {first['load_ms']:.0f} ms); "
        f"batch of {len(SENTENCES)}: median {statistics.median(warm):.1f} ms over {runs} warm runs "
        f"(first run {first['latency_ms']:.0f} ms)"
    )


@app.command()
@typed_errors
def serve(
    host: str = typer.Option("127.0.0.1", help="address to bind (loopback unless you opt in)"),
    port: int = typer.Option(8700),
    browsers: int = typer.Option(0, help="headless browser workers to start now"),
    api_key: str = typer.Option(None, envvar="WEBACCEL_API_KEY", help="OpenAI API bearer key"),
    listen: str = typer.Option(None, help="e.g. 0.0.0.0: accept joining browsers from the network"),
    join: bool = typer.Option(
        None, "--join/--no-join",
        help="take browsers that join with a token (webaccel tokens ...); default: on with "
        "--listen or off loopback",
    ),
    public_url: str = typer.Option(None, help="the URL remote browsers reach (e.g. behind TLS)"),
    launcher: str = typer.Option(None, help="subprocess|selenium|playwright|grid"),
    grid_url: str = typer.Option(None, help="a Selenium Grid 4 hub, e.g. http://hub:4444"),
    verify: str = typer.Option(
        "sample",
        help="check workers' answers against the native reference: sample (the first of "
        "each model on each worker, then 5 percent of remote workers'), all (every answer), off",
    ),
) -> None:
    """Serve the bridge, gateway, OpenAI API, metrics and dashboard until interrupted.

    While it runs, $WEBACCEL_HOME/serve.json (mode 0600) holds its URL and master key,
    for `webaccel tokens`; a clean exit removes it.
    """
    from webaccel.admin import state_path
    from webaccel.serve import serve_forever

    show_on_stderr()

    asyncio.run(
        serve_forever(
            listen or host,
            port,
            browsers,
            api_key=api_key,
            join=join if join is not None else (True if listen else None),
            public_url=public_url,
            launcher=launcher,
            grid_url=grid_url,
            verify=verify,
            state_file=state_path(),
        )
    )


# ------------------------------------------------------------------ webaccel tokens
tokens_app = typer.Typer(
    help="Join tokens of a running `webaccel serve` (found through $WEBACCEL_HOME/serve.json, "
    "or --api URL --key KEY): list, create, revoke.",
    no_args_is_help=True,
)
app.add_typer(tokens_app, name="tokens")
API_OPTION = typer.Option(
    None, "--api", help="the server's URL (default: the `webaccel serve` of this WEBACCEL_HOME)"
)
KEY_OPTION = typer.Option(
    None, "--key", envvar="WEBACCEL_MASTER_KEY",
    help="the server's master key (default: from its state file)", show_envvar=True,
)


def _admin(api: str | None, key: str | None) -> Any:
    from webaccel.admin import AdminClient, resolve_target

    return AdminClient(resolve_target(api, key))


@tokens_app.command("list")
@typed_errors
def tokens_list(
    api: str = API_OPTION,
    key: str = KEY_OPTION,
    as_json: bool = typer.Option(False, "--json", help="print one JSON object"),
) -> None:
    """List the server's join tokens (never their secrets)."""
    from webaccel.admin import describe_expiry, token_state

    with _admin(api, key) as client:
        tokens = client.list()
    if as_json:
        print(json.dumps({"tokens": tokens}))
        return
    rows = [
        (
            str(t.get("id")),
            token_state(t),
            str(t.get("label") or ""),
            time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(t.get("created") or 0)),
            describe_expiry(t.get("expires")),
            str(len(t.get("workers") or [])),
        )
        for t in tokens
    ]
    header = ("id", "state", "label", "created", "expires", "workers")
    if not sys.stdout.isatty():  # plain: one tab-separated line per token, for grep and cut
        print("\t".join(header))
        for row in rows:
            print("\t".join(cell.replace("\t", " ") for cell in row))
        return
    table = Table(*header, title=f"join tokens of {client.target.url}")
    for row in rows:
        table.add_row(*row)
    console.print(table) if rows else console.print("no join tokens (webaccel tokens create)")


@tokens_app.command("create")
@typed_errors
def tokens_create(
    label: str = typer.Option("", help="a name to tell the token apart (up to 200 characters)"),
    ttl: str = typer.Option(None, help="valid for this long: 3600, 90s, 30m, 12h, 7d (default: "
                            "until revoked)"),
    max_workers: int = typer.Option(None, help="the most browsers that may join with it"),
    api: str = API_OPTION,
    key: str = KEY_OPTION,
    as_json: bool = typer.Option(False, "--json", help="print one JSON object"),
) -> None:
    """Issue a join token and print its id and join link (the link is the secret, shown once)."""
    from webaccel.admin import describe_expiry, parse_duration

    ttl_s = parse_duration(ttl) if ttl is not None else None
    with _admin(api, key) as client:
        made = client.create(label, ttl_s=ttl_s, max_workers=max_workers)
    if as_json:
        print(json.dumps(made))
        return
    console.print(f"token id: {made['id']}", highlight=False, markup=False)
    console.print(f"join link (a secret, shown once): {made['join_url']}",
                  highlight=False, markup=False)
    limits = [f"expires {describe_expiry(made.get('expires'))}"]
    if max_workers is not None:
        limits.append(f"at most {max_workers} browser(s)")
    console.print(", ".join(limits), highlight=False, markup=False)
    console.print(f"revoke with: webaccel tokens revoke {made['id']}", highlight=False,
                  markup=False)


@tokens_app.command("revoke")
@typed_errors
def tokens_revoke(
    token_id: str = typer.Argument(..., metavar="ID", help="the token's id (webaccel tokens list)"),
    api: str = API_OPTION,
    key: str = KEY_OPTION,
    as_json: bool = typer.Option(False, "--json", help="print one JSON object"),
) -> None:
    """Revoke a join token: refused from now on, its browsers disconnected."""
    with _admin(api, key) as client:
        done = client.revoke(token_id)
    if as_json:
        print(json.dumps(done))
        return
    gone = done.get("disconnected") or []
    console.print(f"revoked {token_id}" + (f"; disconnected {len(gone)} browser(s): "
                  + ", ".join(gone) if gone else "; no browser was connected with it"),
                  highlight=False, markup=False)


def _register_plugins() -> None:
    # Areas that add their own commands (content store, metrics/bench) do it
    # through register(app); an area not built yet simply adds nothing.
    for module, func, target in (
        ("webaccel.content.cli", "register", app),
        ("webaccel.content.cli", "register_models", models_app),
        ("webaccel.metrics.cli", "register", app),
        ("webaccel.sharding.cli", "register_models", models_app),
    ):
        try:
            mod = importlib.import_module(module)
        except ModuleNotFoundError as exc:
            if exc.name != module:
                raise
            continue
        hook = getattr(mod, func, None)
        if hook is not None:
            hook(target)


_register_plugins()


def main() -> None:
    # tqdm reads TQDM_* when it is imported (later, by transformers/gguf during a
    # build): our stage lines replace its bars.
    os.environ.setdefault("TQDM_DISABLE", "1")
    silence_loggers()
    app()


if __name__ == "__main__":
    main()
