from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from webaccel.errors import InvalidInputError
from webaccel.pool.batching import batch_signature, merge, plan_microbatches, split


def test_signature_ignores_batch_axis_only() -> None:
    a = {"ids": np.zeros((2, 7), np.int64), "mask": np.ones((2, 7), np.int64)}
    b = {"ids": np.zeros((5, 7), np.int64), "mask": np.ones((5, 7), np.int64)}
    c = {"ids": np.zeros((2, 8), np.int64), "mask": np.ones((2, 8), np.int64)}
    assert batch_signature(a)[0] == batch_signature(b)[0]
    assert batch_signature(a)[0] != batch_signature(c)[0]
    assert batch_signature(b)[1] == 5


def test_signature_rejects_disagreeing_rows_and_scalars() -> None:
    with pytest.raises(InvalidInputError):
        batch_signature({"a": np.zeros((2, 3)), "b": np.zeros((3, 3))})
    with pytest.raises(InvalidInputError):
        batch_signature({"a": np.float32(1.0) * np.ones(())})
    with pytest.raises(InvalidInputError):
        batch_signature({})


@given(st.lists(st.integers(1, 4), min_size=1, max_size=6), st.integers(1, 3))
def test_merge_then_split_round_trips(rows: list[int], width: int) -> None:
    reqs = [
        {"x": np.arange(r * width, dtype=np.float32).reshape(r, width) + 100 * i}
        for i, r in enumerate(rows)
    ]
    merged = merge(reqs)
    assert merged["x"].shape == (sum(rows), width)
    back = split(merged, rows)
    for orig, got in zip(reqs, back, strict=True):
        np.testing.assert_array_equal(orig["x"], got["x"])


def test_split_refuses_outputs_without_batch_rows() -> None:
    with pytest.raises(InvalidInputError):
        split({"loss": np.zeros((1,))}, [2, 3])


@given(
    st.lists(st.integers(1, 300), min_size=1, max_size=400),
    st.integers(1, 64),
    st.integers(8, 4096),
)
def test_microbatch_plan_covers_each_index_once_within_its_limits(
    lengths: list[int], max_rows: int, max_tokens: int
) -> None:
    plan = plan_microbatches(lengths, max_rows=max_rows, max_tokens=max_tokens)
    seen = [i for idx, _ in plan for i in idx]
    assert sorted(seen) == list(range(len(lengths)))
    assert [lengths[i] for i in seen] == sorted(lengths)  # sorted by length
    for idx, width in plan:
        assert 1 <= len(idx) <= max_rows
        assert width % 8 == 0 and width >= max(lengths[i] for i in idx)
        assert len(idx) == 1 or len(idx) * width <= max_tokens
        for i in idx:  # nobody is padded past twice its own bucket
            assert width <= 2 * max(8, -(-lengths[i] // 8) * 8)


def test_microbatch_plan_keeps_short_texts_short() -> None:
    lengths = [6] * 40 + [128] * 40 + [7, 9]
    plan = plan_microbatches(lengths, max_rows=32, max_tokens=32 * 64)
    widths = {i: w for idx, w in plan for i in idx}
    assert all(widths[i] <= 16 for i in [*range(40), 80, 81])  # never 128
    assert sum(widths[i] == 8 for i in range(40)) >= 32
    assert all(widths[i] == 128 for i in range(40, 80))
    assert max(len(idx) for idx, w in plan if w == 128) == 16  # 16 x 128 = the token budget
    with pytest.raises(InvalidInputError):
        plan_microbatches([1], max_rows=0)
