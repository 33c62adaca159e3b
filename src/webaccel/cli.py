"""The ``webaccel`` command."""

from __future__ import annotations

import asyncio
import importlib
import json
import statistics
import time
from collections.abc import Callable
from functools import wraps
from typing import Any

import numpy as np
import typer
from rich.console import Console
from rich.table import Table

from webaccel.errors import WebAccelError

app = typer.Typer(
    help="Run ONNX models in a pool of web browsers.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
)
models_app = typer.Typer(help="The model registry: list, show, prepare.", no_args_is_help=True)
app.add_typer(models_app, name="models")
console = Console()
err_console = Console(stderr=True)


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


def _jsonable(value: Any) -> Any:
    if isinstance(value, np.ndarray):
        return value.tolist()
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, dict):
        return {k: _jsonable(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_jsonable(v) for v in value]
    return value


@app.command()
@typed_errors
def run(
    model: str = typer.Argument(..., help="registered model name, e.g. minilm"),
    input_text: str = typer.Argument(..., metavar="INPUT", help="the input (text for minilm)"),
    backend: str = typer.Option("auto", help="auto|webgpu|webnn|wasm"),
    browser: str = typer.Option("auto", help="auto|chromium|firefox|node-webgpu"),
    precision: str = typer.Option("auto", help="auto|fp32|fp16|int8|int4|mixed"),
    as_json: bool = typer.Option(False, "--json", help="print one JSON object"),
    stages: int = typer.Option(
        0, "--stages", help="split into N pipeline stages, each on its own browser (0: whole)"
    ),
) -> None:
    """Run MODEL on INPUT in a headless browser and print the result."""
    from webaccel.api import WebAccelerator

    default_browser = "chromium" if browser == "auto" else browser
    options = {} if precision == "auto" else {"precision": precision}
    with WebAccelerator(
        default_browser=default_browser, default_platform="auto", max_connections=max(1, stages)
    ) as acc:
        platform = None if backend == "auto" else backend
        pinned = None if browser == "auto" else browser
        if stages:  # webaccel.sharding: one browser per stage
            from webaccel.sharding.run import run_split

            result = run_split(acc, model, input_text, stages=stages, precision=precision,
                               platform=platform, browser=pinned)
        else:
            result = acc.accelerate(model, input_text, options, platform=platform, browser=pinned)
    if "embeddings" in result:
        result["embedding"] = result.pop("embeddings")[0]
        result["truncated"] = result["truncated"][0]
    if as_json:
        print(json.dumps(_jsonable(result)))
        return
    shown = {k: v for k, v in result.items() if k not in ("embedding", "user_agent")}
    if "embedding" in result:
        vec = result["embedding"]
        console.print(f"embedding: {len(vec)} floats, first 4: {np.round(vec[:4], 4).tolist()}")
    for key, value in shown.items():
        console.print(f"{key}: {value}", highlight=False)


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
                        "prepared": s.onnx_path().is_file(),
                    }
                    for s in specs
                ]
            )
        )
        return
    table = Table("name", "task", "source", "prepared")
    for s in specs:
        table.add_row(s.name, s.task, s.source, "yes" if s.onnx_path().is_file() else "no")
    console.print(table)


@models_app.command("show")
@typed_errors
def models_show(name: str, as_json: bool = typer.Option(False, "--json")) -> None:
    """Show one model: task, source, files and sizes."""
    from webaccel.models import registry

    spec = registry.get(name)
    files = {p: str(spec.onnx_path(p)) for p in registry.PRECISIONS if spec.onnx_path(p).is_file()}
    info = {
        "name": spec.name,
        "task": spec.task,
        "source": spec.source,
        "description": spec.description,
        "aliases": list(spec.aliases),
        "files": files,
        "bytes": {p: spec.onnx_path(p).stat().st_size for p in files},
    }
    if as_json:
        print(json.dumps(info))
    else:
        for k, v in info.items():
            console.print(f"{k}: {v}", highlight=False)


@models_app.command("prepare")
@typed_errors
def models_prepare(
    name: str, precision: str = typer.Option("fp32"), quiet: bool = typer.Option(False, "--quiet")
) -> None:
    """Build (once) and cache the ONNX file of NAME at PRECISION."""
    from webaccel.models import registry

    spec = registry.get(name)
    if spec.onnx_path(precision).is_file():
        if not quiet:
            console.print(str(spec.onnx_path(precision)))
        return
    with console.status(f"exporting {name} ({precision}) to ONNX"):
        start = time.perf_counter()
        path = spec.ensure_onnx(precision)
    console.print(
        f"{name} {precision}: {path} ({path.stat().st_size / 1e6:.1f} MB, "
        f"{time.perf_counter() - start:.1f} s)"
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
        render(report, console)


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
    public_url: str = typer.Option(None, help="the URL remote browsers reach (e.g. behind TLS)"),
    launcher: str = typer.Option(None, help="subprocess|selenium|playwright|grid"),
    grid_url: str = typer.Option(None, help="a Selenium Grid 4 hub, e.g. http://hub:4444"),
) -> None:
    """Serve the bridge, gateway, OpenAI API, metrics and dashboard until interrupted."""
    from webaccel.serve import serve_forever

    asyncio.run(
        serve_forever(
            listen or host,
            port,
            browsers,
            api_key=api_key,
            join=True if listen else None,
            public_url=public_url,
            launcher=launcher,
            grid_url=grid_url,
        )
    )


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
    app()


if __name__ == "__main__":
    main()
