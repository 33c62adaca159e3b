"""The async resource pool: workers, routing, queues, batching, scaling, health, retries.

``ResourcePool`` (:mod:`webaccel.pool.pool`) is the entry point; it drives
workers through :mod:`webaccel.pool.transport` and learns models through a
resolver (:mod:`webaccel.pool.resolver`).  Decisions live in pure modules:
:mod:`~webaccel.pool.lifecycle` (worker states), :mod:`~webaccel.pool.state`
(queues and assignments), :mod:`~webaccel.pool.routing`,
:mod:`~webaccel.pool.batching`.  :mod:`webaccel.pool.fake` is for scheduler
unit tests only.
"""

from __future__ import annotations

from webaccel.pool.fake import FakeLauncher, FakeWorker
from webaccel.pool.lifecycle import IllegalTransition, WorkerEvent, WorkerState
from webaccel.pool.pool import InferenceResult, Lease, ResourcePool
from webaccel.pool.resolver import ModelResolver, ResolvedModel, StaticResolver
from webaccel.pool.routing import DEFAULT_BROWSER_PREFERENCES, RoutingPolicy
from webaccel.pool.state import ScalingPolicy
from webaccel.pool.transport import (
    LoadInfo,
    ModelRef,
    RunResult,
    WorkerLauncher,
    WorkerTransport,
)

__all__ = [
    "DEFAULT_BROWSER_PREFERENCES",
    "FakeLauncher",
    "FakeWorker",
    "IllegalTransition",
    "InferenceResult",
    "Lease",
    "LoadInfo",
    "ModelRef",
    "ModelResolver",
    "ResolvedModel",
    "ResourcePool",
    "RoutingPolicy",
    "RunResult",
    "ScalingPolicy",
    "StaticResolver",
    "WorkerEvent",
    "WorkerLauncher",
    "WorkerState",
    "WorkerTransport",
]
