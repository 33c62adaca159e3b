from __future__ import annotations

import numpy as np
import pytest

from webaccel.errors import InvalidInputError
from webaccel.models import calibration as C
from webaccel.models import vision as V


def test_pictures_are_deterministic() -> None:
    a, b = C.pictures(3), C.pictures(3)
    assert all(np.array_equal(np.asarray(x), np.asarray(y)) for x, y in zip(a, b, strict=True))
    assert len({x.size for x in a}) > 1  # varied sizes exercise the letterbox


def test_feeds_for_vision_spec() -> None:
    feeds = C.feeds_for(V.NSFW_CNN)
    assert len(feeds) == 8 and feeds[0]["input_0"].shape == (1, 224, 224, 3)
    assert C.metric_for(V.NSFW_CNN.task) == "top1"
    with pytest.raises(InvalidInputError):
        C.metric_for("audio")
    with pytest.raises(InvalidInputError):
        C.samples_for("text_generation")


def test_feeds_for_minilm() -> None:
    text = pytest.importorskip("webaccel.models.text")
    feeds = C.feeds_for(text.MINILM)
    assert len(feeds) == len(C.SENTENCES)
    assert feeds[9]["input_ids"].shape == (1, 3)  # "ok": [CLS] ok [SEP]
    assert set(feeds[0]) >= {"input_ids", "attention_mask"}
    assert C.metric_for(text.MINILM.task) == "cosine"
