from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from webaccel.errors import InvalidInputError
from webaccel.pool.batching import batch_signature, merge, split


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
