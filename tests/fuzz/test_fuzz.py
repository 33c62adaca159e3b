"""Coverage-guided fuzzing of every decoder that reads bytes from outside, plus
the replay of every input that ever broke one (``corpus/<target>/``).

Each target states what it may raise: the bridge decoder only ProtocolError
(and the session nothing at all: it turns every frame into an event), the
dag-pb/UnixFS/CAR decoders only DecodeError (UnsupportedDagError for valid
but unsupported DAGs), and the gateway's Range parser nothing, with a
well-formed answer.  ``WEBACCEL_FUZZ_SECONDS`` (default 2) sets each run's
budget, ``WEBACCEL_FUZZ_SEED`` its seed, ``WEBACCEL_FUZZ_SAVE=1`` writes new
failing inputs into the corpus.
"""

from __future__ import annotations

import contextlib
import json
import os
from collections.abc import Callable, Iterable
from dataclasses import dataclass

import numpy as np
import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st

from webaccel.bridge import frames, session
from webaccel.bridge.frames import Control, TensorFrame
from webaccel.bridge.session import BridgeSession, Malformed
from webaccel.content import car, dag, gateway, pb
from webaccel.content import cid as cidmod
from webaccel.content.errors import DecodeError, UnsupportedDagError
from webaccel.content.importer import Profile, import_bytes
from webaccel.errors import ProtocolError, RangeNotSatisfiableError

from .engine import corpus, fuzz, save

SECONDS = float(os.environ.get("WEBACCEL_FUZZ_SECONDS", "2"))
SEED = int(os.environ.get("WEBACCEL_FUZZ_SEED", "0"))


@dataclass
class Target:
    run: Callable[[bytes], object]
    seeds: Callable[[], Iterable[bytes]]
    modules: tuple[object, ...]
    allowed: tuple[type[BaseException], ...]


# ---------------------------------------------------------------- the bridge
def _frame_seeds() -> list[bytes]:
    return [
        frames.encode_tensors(
            TensorFrame(
                id="r1",
                type="result",
                tensors={"x": np.arange(6, dtype=np.float32).reshape(2, 3), "m": np.ones(2, bool)},
                data={"page_ms": 1.0},
            )
        ),
        frames.encode_tensors(TensorFrame(id="g1", type="stream", tensors={})),
    ]


def _control_seeds() -> list[bytes]:
    return [
        frames.encode_control(c).encode()
        for c in (
            Control(
                id="h", type="hello", data={"worker_id": "w", "capabilities": {}, "loaded": []}
            ),
            Control(id="r1", type="error", data={"code": "LOAD_FAILED", "message": "x"}),
            Control(id="phb1", type="heartbeat", data={"busy": 0}),
            Control(id="r1", type="stream", data={"token": 3}),
        )
    ]


def _session_receive(data: bytes) -> None:
    s = BridgeSession()
    s.request_run("m", {})  # "r1" is pending
    for message in (data, data.decode("utf-8", "replace")):
        event = s.receive(message)
        assert isinstance(event, session.Event.__args__)  # type: ignore[attr-defined]
        if isinstance(event, Malformed):
            assert json.loads(event.answer())["data"]["code"] == "BAD_REQUEST"


# ---------------------------------------------------------------- content
def _dag_seeds() -> list[bytes]:
    _, blocks = import_bytes(bytes(range(256)) * 40, Profile("t", 0, False, 100, 3))
    return [b for _, b in blocks][:6]


_DAG_CID = cidmod.make(b"any block", cidmod.DAG_PB, 1)


def _dag_decode(data: bytes) -> None:
    node = dag.decode(_DAG_CID, data)
    if node.kind == "file":
        dag.file_pieces(node)
        dag.file_pieces(node, 3, 7)
    elif node.kind == "directory":
        dag.dir_entries(node)
    node.links  # noqa: B018 - properties decode too
    node.size  # noqa: B018


def _car_seeds() -> list[bytes]:
    blocks = [(c, b) for c, b in import_bytes(b"hello car" * 20, Profile("t", 1, True, 64, 4))[1]]
    return [b"".join(car.write_car([blocks[-1][0]], blocks))]


def _car_read(data: bytes) -> None:
    list(car.read_car([data]))
    list(car.read_car([data[: len(data) // 2], data[len(data) // 2 :]]))


# ---------------------------------------------------------------- Range
def _parse_range(data: bytes) -> None:
    """None (the whole body), a non-empty in-bounds range, or RangeNotSatisfiableError
    (416) -- nothing else, for any header value and body size."""
    value = data.decode("latin-1")
    for size in (0, 1, 1000):
        try:
            got = gateway._parse_range(value, size)
        except RangeNotSatisfiableError:
            continue
        assert got is None or (isinstance(got, tuple) and 0 <= got[0] < got[1] <= size), (
            value,
            size,
            got,
        )


TARGETS: dict[str, Target] = {
    "frames-binary": Target(
        lambda d: frames.decode(d), _frame_seeds, (frames,), (ProtocolError,)
    ),
    "frames-text": Target(
        lambda d: frames.decode(d.decode("utf-8", "replace")), _control_seeds, (frames,),
        (ProtocolError,),
    ),
    "bridge-session": Target(
        _session_receive, lambda: _frame_seeds() + _control_seeds(), (frames, session), ()
    ),
    "dag-pb": Target(pb.decode_node, _dag_seeds, (pb,), (DecodeError,)),
    "unixfs": Target(
        pb.decode_unixfs,
        lambda: [pb.decode_node(b).data or b"" for b in _dag_seeds()],
        (pb,),
        (DecodeError,),
    ),
    "dag": Target(_dag_decode, _dag_seeds, (dag, pb), (DecodeError, UnsupportedDagError)),
    "car": Target(_car_read, _car_seeds, (car,), (DecodeError,)),
    "range": Target(
        _parse_range,
        lambda: [b"bytes=0-99", b"bytes=-5", b"bytes=10-", b"bytes=0-0,5-6", b"bytes=999-1"],
        (gateway,),
        (),
    ),
}


@pytest.mark.parametrize("name", TARGETS)
def test_fuzz(name: str) -> None:
    t = TARGETS[name]
    run = t.run
    result = fuzz(run, t.seeds(), modules=t.modules, allowed=t.allowed, seconds=SECONDS,
                  seed=SEED)
    saved = save(name, result.findings)
    assert result.arcs > 20 and result.runs > 50, "the fuzzer did not reach the code"
    assert not result.findings, (
        f"{len(result.findings)} inputs broke {name} ({result.runs} runs); first: "
        f"{result.findings[0]}" + (f"; saved to {saved}" if saved else "")
    )


# Findings not fixed yet, replayed as strict xfails (so a fix turns them into
# failures that ask for their entry to go).  The Range parser's three findings
# (an empty range on an empty body, >4300-digit positions, non-ASCII digits)
# are fixed in content/gateway.py and replay as plain cases.
KNOWN: dict[str, str] = {}

REPLAY = [
    pytest.param(
        name,
        file,
        data,
        id=f"{name}/{file}",
        marks=[pytest.mark.xfail(strict=True, reason=KNOWN[f"{name}/{file}"])]
        if f"{name}/{file}" in KNOWN
        else [],
    )
    for name in TARGETS
    for file, data in corpus(name)
]


@pytest.mark.parametrize(("name", "file", "data"), REPLAY)
def test_corpus_replays(name: str, file: str, data: bytes) -> None:
    t = TARGETS[name]
    with contextlib.suppress(t.allowed):
        t.run(data)


def test_corpus_is_not_empty() -> None:
    # The corpus holds what the fuzzers found while this was written; an empty
    # one means the replay above silently stopped covering them.
    assert len(REPLAY) >= 1


# ---------------------------------------------------------------- Range, by property
# RFC 9110 14.1.1: DIGIT is ASCII; a position longer than Python's 4300-digit
# int() limit is just a huge number (past the end), not a server error.
@settings(max_examples=200, deadline=None)
@given(
    st.sampled_from(["bytes={}-", "bytes=-{}", "bytes=0-{}"]),
    st.from_regex(r"[0-9]{1,5000}", fullmatch=True),  # digits as text: int() has a limit
)
@example("bytes={}-", "1" + "0" * 4400)
@example("bytes=0-{}", "1" + "0" * 4400)
@example("bytes=-{}", "0" * 4400 + "5")
def test_range_positions_of_any_size(template: str, digits: str) -> None:
    _parse_range(template.format(digits).encode("latin-1"))


def test_range_digits_are_ascii_only() -> None:
    assert gateway._parse_range("bytes=\u0661-\u0662", 10) is None
