"""A synchronous iterator over a :class:`TextStream` that lives on another thread's loop."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from typing import Any

from webaccel.generation.runner import GenerationResult, TextStream


class SyncTextStream(Iterator[str]):
    """Yields text pieces; ``result`` is set when the stream ends; ``close()`` cancels it."""

    def __init__(self, stream: TextStream, loop: asyncio.AbstractEventLoop) -> None:
        self._stream = stream
        self._loop = loop
        self._done = False

    def __iter__(self) -> SyncTextStream:
        return self

    def __next__(self) -> str:
        if self._done:
            raise StopIteration
        fut = asyncio.run_coroutine_threadsafe(self._stream.__anext__(), self._loop)
        try:
            piece = fut.result()
        except StopAsyncIteration:
            self._done = True
            raise StopIteration from None
        except BaseException:
            fut.cancel()
            self.close()
            raise
        return piece.text

    @property
    def result(self) -> GenerationResult | None:
        return self._stream.result

    def close(self) -> None:
        if self._done:
            return
        self._done = True
        if self._loop.is_running():
            asyncio.run_coroutine_threadsafe(self._stream.aclose(), self._loop).result(30)

    def __enter__(self) -> SyncTextStream:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    def __del__(self) -> None:
        # Never block here (the collector may run on the loop's own thread): schedule only.
        if not self._done and self._loop.is_running():
            self._done = True
            asyncio.run_coroutine_threadsafe(self._stream.aclose(), self._loop)
