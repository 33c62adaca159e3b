"""Splitting MiniLM into stages: chained in native onnxruntime they equal the whole model."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from webaccel.errors import InvalidInputError
from webaccel.sharding import split as cut

TEXTS = [
    "A man plays guitar.",
    "Someone makes music on a stage in front of a large crowd of people.",
    "The cat sat.",
]


def _run(path, feeds):
    import onnxruntime as ort

    o = ort.SessionOptions()
    o.intra_op_num_threads = 1
    sess = ort.InferenceSession(str(path), o, providers=["CPUExecutionProvider"])
    names = [i.name for i in sess.get_inputs()]
    outs = sess.run(None, {n: feeds[n] for n in names})
    return dict(zip([x.name for x in sess.get_outputs()], outs, strict=True))


@pytest.fixture(scope="module")
def feeds():
    pytest.importorskip("onnxruntime")
    from webaccel.models.text import TextEmbeddingProcessor

    return TextEmbeddingProcessor().preprocess(TEXTS, {}).tensors


@pytest.mark.parametrize("stages", [2, 3])
def test_chained_stages_equal_the_unsplit_model(feeds, stages):
    from webaccel.sharding.stages import split_model

    sm = split_model("minilm", stages)
    assert len(sm.stages) == stages and sum(sm.sizes) == 6
    whole = _run(sm.parent.onnx_path(), feeds)["sentence_embedding"]
    avail = dict(feeds)
    for s in sm.stages:
        out = _run(s.path(), avail)
        assert set(out) == set(s.outputs)
        avail.update(out)
    # Later stages take the previous hidden state and the attention mask, nothing else.
    for s in sm.stages[1:]:
        assert set(s.inputs) == {sm.stages[s.index - 1].outputs[0], "attention_mask"}
    diff = float(np.abs(avail["sentence_embedding"] - whole).max())
    assert diff <= 1e-6, diff
    # Each stage holds only its own layers' weights: together about the whole file.
    total = sum(s.size_bytes() for s in sm.stages)
    assert 0.95 < total / sm.parent.onnx_path().stat().st_size < 1.1


def test_each_stage_has_its_own_cid(tmp_path):
    from webaccel.content.store import BlockStore
    from webaccel.hosting import content_id
    from webaccel.sharding.stages import split_model

    sm = split_model("minilm", 2)
    store = BlockStore(tmp_path / "blocks")
    cids = [content_id(s.path(), store) for s in sm.stages]
    assert len(set(cids)) == 2 and all(c.startswith("b") for c in cids)


def test_even_cuts():
    assert cut.even_cuts(6, 2) == [3, 3]
    assert cut.even_cuts(6, 4) == [2, 2, 1, 1]
    with pytest.raises(InvalidInputError):
        cut.even_cuts(2, 3)


def test_balance_puts_the_expensive_layers_apart():
    assert cut.balance([10, 1, 1, 1, 1, 10], 2) == [3, 3]
    assert cut.balance([10, 1, 1, 1, 1, 1], 2) == [1, 5]
    assert cut.balance([1, 1, 1, 1, 1, 1, 1, 9], 2) == [7, 1]


@settings(deadline=None, max_examples=60)
@given(st.lists(st.floats(0.1, 100), min_size=1, max_size=12), st.integers(1, 12))
def test_balance_is_optimal(costs, stages):
    import itertools

    stages = min(stages, len(costs))
    sizes = cut.balance(costs, stages)
    assert sum(sizes) == len(costs) and len(sizes) == stages and min(sizes) >= 1

    def worst(sz):
        i, w = 0, 0.0
        for s in sz:
            w = max(w, sum(costs[i:i + s]))
            i += s
        return w

    best = min(
        worst([b - a for a, b in zip((0, *cuts), (*cuts, len(costs)), strict=True)])
        for cuts in itertools.combinations(range(1, len(costs)), stages - 1)
    )
    assert worst(sizes) <= best + 1e-9
