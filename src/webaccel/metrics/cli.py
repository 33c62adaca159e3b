"""``webaccel bench`` and ``webaccel report``, added to the main app by :func:`register`.

    webaccel bench [NAME...] [--json] [--repeat N] [--warmup N] [-o KEY=VALUE]... [--db PATH]
    webaccel report [--out DIR] [--db PATH]

``bench`` runs the named benchmarks of DESIGN.md (all when none are named);
with ``--json`` it prints exactly one JSON object per line (see
:mod:`webaccel.bench.runner`), otherwise a table.  Every result, unavailable
ones included, is stored in the metrics file.  It exits 1 if a benchmark
crashed, 2 for an unknown name.  Both commands work while a server is writing
the same file.
"""
from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.table import Table

from webaccel.bench.core import BENCHMARK_MODULES
from webaccel.terminal import make_console


def _summary(result: dict[str, Any]) -> str:
    figs = result.get("figures") or {}
    for v in figs.values():
        if isinstance(v, dict) and "median" in v:
            return (f"median {v['median']:.4g} "
                    f"(p10 {v.get('p10', 0):.4g}, p90 {v.get('p90', 0):.4g})")
    return ""


def _parse_options(items: list[str]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for item in items:
        key, sep, raw = item.partition("=")
        if not sep or not key:
            raise typer.BadParameter(f"expected KEY=VALUE, got {item!r}", param_hint="--option")
        try:
            out[key] = json.loads(raw)
        except ValueError:
            out[key] = raw
    return out


def register(app: typer.Typer) -> None:
    """Add the ``bench`` and ``report`` commands to ``app``."""

    @app.command("bench")
    def bench(
        names: Annotated[list[str] | None, typer.Argument(
            help="benchmarks to run (default: all): " + ", ".join(BENCHMARK_MODULES))] = None,
        as_json: Annotated[bool, typer.Option("--json", help="one JSON object per line")] = False,
        repeat: Annotated[int, typer.Option("--repeat", min=1, help="measured repeats")] = 20,
        warmup: Annotated[int, typer.Option("--warmup", min=0, help="warm-up runs")] = 20,
        option: Annotated[list[str] | None, typer.Option(
            "--option", "-o", help="KEY=VALUE passed to the benchmarks (value parsed as JSON "
            "when it parses), e.g. -o workers=4")] = None,
        db: Annotated[Path | None, typer.Option("--db", help="metrics file")] = None,
        minutes: Annotated[float | None, typer.Option(
            "--minutes", min=0.05, help="how long time-bound benchmarks run (soak)")] = None,
    ) -> None:
        """Run benchmarks; print and store one result each."""
        from webaccel.bench.runner import run_benchmarks
        from webaccel.metrics.store import MetricsStore

        unknown = [n for n in names or [] if n not in BENCHMARK_MODULES]
        if unknown:
            raise typer.BadParameter(
                f"unknown benchmark(s) {', '.join(unknown)}; known: {', '.join(BENCHMARK_MODULES)}",
                param_hint="NAME")
        options = _parse_options(option or [])
        if minutes is not None:
            options["minutes"] = minutes
        err = make_console(stderr=True)
        results = []
        store = MetricsStore(db)
        try:
            with err.status("starting…") as status:
                def started(name: str) -> None:
                    status.update(f"running {name}…")  # stderr; stdout stays JSON

                for result in run_benchmarks(names or None, repeat=repeat, warmup=warmup,
                                             options=options, store=store, on_start=started):
                    results.append(result)
                    if as_json:
                        sys.stdout.write(json.dumps(result) + "\n")
                        sys.stdout.flush()
        finally:
            store.close()
        if not as_json:
            table = Table(title="webaccel bench")
            for col in ("benchmark", "ratio", "ratio is", "figures / why"):
                table.add_column(col)
            for r in results:
                if "ratio" in r:
                    table.add_row(r["benchmark"], f"{r['ratio']:.4g}", r["ratio_is"], _summary(r))
                else:
                    why = r.get("unavailable") or r.get("error") or ""
                    label = "unavailable" if "unavailable" in r else "[red]error[/red]"
                    table.add_row(r["benchmark"], label, r.get("ratio_is", ""), why)
            make_console().print(table)
            make_console().print(f"stored in {store.path}")
        if any("error" in r for r in results):
            raise typer.Exit(1)

    @app.command("report")
    def report(
        out: Annotated[Path | None, typer.Option("--out", help="output folder")] = None,
        db: Annotated[Path | None, typer.Option("--db", help="metrics file")] = None,
    ) -> None:
        """Write report.md and report.html with PNG plots from the metrics store."""
        from webaccel import paths
        from webaccel.errors import MissingExtraError

        try:
            from webaccel.metrics.report import build_report
        except MissingExtraError as exc:  # matplotlib is the report extra
            make_console(stderr=True).print(f"error [{exc.code}] {exc.message}", markup=False)
            raise typer.Exit(2) from None
        from webaccel.metrics.store import default_path

        target = out or paths.home() / "report"
        rep = build_report(db or default_path(), target)
        typer.echo(f"markdown: {rep.markdown}")
        typer.echo(f"html: {rep.html}")
        for name, p in rep.plots.items():
            typer.echo(f"plot {name}: {p}")
