"""Consoles for the command line: rich on a terminal, plain unwrapped lines otherwise.

rich wraps at 80 columns when its output is not a terminal, which splits
log lines (an API key over two lines) and cuts table cells (``chromi…``).
Piped or logged output gets no colour, no wrapping and no width cap, so
``grep`` and log collectors see one line per line.
"""

from __future__ import annotations

import sys
from typing import Any

from rich.console import Console

# Wide enough that no table column is ever cut when output is not a terminal.
PLAIN_WIDTH = 10_000


def make_console(*, stderr: bool = False, file: Any = None) -> Console:
    stream = file if file is not None else (sys.stderr if stderr else sys.stdout)
    terminal = bool(getattr(stream, "isatty", lambda: False)())
    if terminal:
        return Console(stderr=stderr, file=file)
    return Console(
        stderr=stderr,
        file=file,
        soft_wrap=True,
        width=PLAIN_WIDTH,
        no_color=True,
        highlight=False,
        emoji=False,
    )


class LazyConsole:
    """A console for stdout or stderr as they are when it prints (tests and
    wrappers replace ``sys.stdout``; a module-level console would keep the old one)."""

    def __init__(self, *, stderr: bool = False) -> None:
        self._stderr = stderr
        self._cache: tuple[Any, Console] | None = None

    def _console(self) -> Console:
        stream = sys.stderr if self._stderr else sys.stdout
        if self._cache is None or self._cache[0] is not stream:
            self._cache = (stream, make_console(stderr=self._stderr, file=stream))
        return self._cache[1]

    def __getattr__(self, name: str) -> Any:
        return getattr(self._console(), name)
