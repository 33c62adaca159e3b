"""``webaccel run`` through a running ``webaccel serve``, with the standard library only.

The full CLI imports numpy, typer, rich and the content store before it reads a
flag (about 0.55 s here), while a warm server answers MiniLM in about 30 ms. So
the ``webaccel`` command starts here: when a serve of this WEBACCEL_HOME is
running and the call is one it answers (``run`` without --local, --stages,
--help or generation flags), this sends it (``POST /api/v0/run``,
:mod:`webaccel.run_route`) and prints what the full CLI prints
(:mod:`webaccel.run_output`). Anything else, including every failure to reach
the server, returns None and the full CLI runs as before, with its own error
messages. As ``ipfs`` talks to its daemon.
"""

from __future__ import annotations

import base64
import json
import os
import sys
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

# Flags of `webaccel run` this path understands (name -> takes a value). The
# rest (--local, --stages, generation's, --help) go to the full CLI.
FLAGS = {"--backend": True, "--browser": True, "--precision": True, "--timeout": True,
         "--json": False}
# transformers.js dtype names, as webaccel.dtypes maps them
DTYPES = {"q8": "int8", "uint8": "int8", "int8": "int8", "q4": "int4", "q4f16": "int4",
          "int4": "int4", "fp16": "fp16", "fp32": "fp32", "mixed": "mixed"}


def parse(argv: list[str]) -> dict[str, Any] | None:
    """``run MODEL INPUT [flags]`` as a dict, or None when the full CLI must parse it."""
    if len(argv) < 3 or argv[0] != "run":
        return None
    args: dict[str, Any] = {"positional": []}
    it = iter(argv[1:])
    for arg in it:
        if arg.startswith("--"):
            name, eq, value = arg.partition("=")
            if name not in FLAGS:
                return None
            if FLAGS[name]:
                value = value if eq else next(it, "")
                if not value:
                    return None
                args[name[2:]] = value
            elif eq:
                return None
            else:
                args[name[2:]] = True
        elif arg.startswith("-") and arg != "-":
            return None
        else:
            args["positional"].append(arg)
    if len(args["positional"]) != 2:
        return None
    precision = args.get("precision", "auto")
    if precision != "auto" and precision not in DTYPES:
        return None  # the full CLI explains the choices
    try:
        timeout = float(args.get("timeout", 600.0))
    except ValueError:
        return None
    backend, browser = args.get("backend", "auto"), args.get("browser", "auto")
    model, text = args["positional"]
    options: dict[str, Any] = {"timeout": timeout}
    if precision != "auto":
        options["precision"] = DTYPES[precision]
    return {
        "model": model,
        "input": text,
        "options": options,
        "platform": None if backend == "auto" else backend,
        "browser": None if browser == "auto" else browser,
        "timeout": timeout,
        "json": bool(args.get("json")),
    }


def server() -> tuple[str, str] | None:
    """(url, master key) from ``$WEBACCEL_HOME/serve.json`` when its process runs."""
    home = os.environ.get("WEBACCEL_HOME") or str(Path.home() / ".cache" / "webaccel")
    try:
        state = json.loads((Path(home) / "serve.json").read_text())
        os.kill(int(state["pid"]), 0)  # a stale file: the full CLI removes it and says so
        url, key = str(state["url"]), str(state["master_key"])
    except (OSError, ValueError, KeyError, TypeError):
        return None
    return url.replace("://0.0.0.0:", "://127.0.0.1:").replace("://[::]:", "://[::1]:"), key


def run(argv: list[str]) -> int | None:
    """Exit status, or None when the full CLI should handle ``argv``."""
    call = parse(argv)
    target = server() if call is not None else None
    if call is None or target is None:
        return None
    url, key = target
    value: Any = call["input"]
    path = Path(value)
    if len(value) < 4096 and path.is_file():
        value = {"file": base64.b64encode(path.read_bytes()).decode(), "suffix": path.suffix}
    body = {"model": call["model"], "input": value, "options": call["options"],
            "platform": call["platform"], "browser": call["browser"],
            # streamed generation prints as it goes: the full CLI does that here
            "local_tasks": ["text_generation"]}
    request = urllib.request.Request(
        url.rstrip("/") + "/api/v0/run", data=json.dumps(body).encode(), method="POST",
        headers={"authorization": f"Bearer {key}", "content-type": "application/json"})
    try:
        with urllib.request.urlopen(request, timeout=call["timeout"] + 10) as resp:
            result = json.loads(resp.read())
    except urllib.error.HTTPError as exc:
        try:
            error = json.loads(exc.read()).get("error")
        except (ValueError, AttributeError):
            error = None
        if not (isinstance(error, dict) and exc.code != 401):
            return None  # not a webaccel answer, or a refused key: the full CLI explains
        return _fail(error, call["json"])
    except (OSError, ValueError):
        return None
    if not isinstance(result, dict) or result.get("local"):
        return None
    from webaccel.run_output import print_result

    print_result(result, as_json=call["json"])
    return 0


def _fail(error: dict[str, Any], as_json: bool) -> int:
    """As the full CLI's typed_errors prints a WebAccelError."""
    if as_json:
        print(json.dumps({"error": error}))
    else:
        print(f"error [{error.get('code')}] {error.get('message')}", file=sys.stderr)
    return 2


def main() -> None:
    """The ``webaccel`` command."""
    status = run(sys.argv[1:])
    if status is not None:
        raise SystemExit(status)
    from webaccel.cli import main as full_cli

    full_cli()


if __name__ == "__main__":
    main()
