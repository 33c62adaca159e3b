"""Builders shared by the pool tests."""

from __future__ import annotations

from webaccel.pool.routing import Constraints, WorkerCaps
from webaccel.pool.state import ModelInfo, PoolState, Request
from webaccel.pool.transport import ModelRef


def ref(
    name: str, backend: str = "wasm", precision: str = "fp32", size: int | None = None
) -> ModelRef:
    return ModelRef(
        key=f"{name}:{backend}:{precision}",
        name=name,
        url=f"/models/{name}",
        backend=backend,
        precision=precision,
        size_bytes=size,
    )


def model(
    name: str,
    model_type: str | None = "text_embedding",
    variants: tuple[tuple[str, str], ...] = (("wasm", "fp32"),),
    *,
    max_batch: int = 1,
    max_wait: float = 0.0,
    size: int | None = None,
) -> ModelInfo:
    return ModelInfo(
        name,
        model_type,
        tuple(ref(name, b, p, size) for b, p in variants),
        max_batch=max_batch,
        max_wait=max_wait,
    )


def caps(
    *backends: str, f16: bool = False, software: bool = False, budget: int | None = None
) -> WorkerCaps:
    return WorkerCaps(
        tuple(backends or ("wasm",)),
        shader_f16=f16,
        software_webgpu=software,
        memory_budget_bytes=budget,
    )


def add_worker(
    s: PoolState,
    wid: str,
    browser: str = "chromium",
    c: WorkerCaps | None = None,
    now: float = 0.0,
    slots: int = 1,
) -> None:
    s.add_launching(wid, browser, now)
    s.worker_ready(wid, browser, c or caps("wasm"), now, slots=slots)


_next = [0]


def req(
    model_name: str,
    *,
    priority: int = 0,
    deadline: float | None = None,
    browser: str | None = None,
    backend: str | None = None,
    precision: str | None = None,
    batch_key: object = None,
    rows: int = 1,
    rid: int | None = None,
    allow_software: bool = False,
    kind: str = "run",
) -> Request:
    """``backend``: a demand for exactly that backend (a one-entry priority list)."""
    _next[0] += 1
    return Request(
        id=rid if rid is not None else _next[0],
        model=model_name,
        priority=priority,
        deadline=deadline,
        constraints=Constraints(
            browser, (backend,) if backend else None, precision, allow_software
        ),
        batch_key=batch_key,
        rows=rows,
        kind=kind,
    )
