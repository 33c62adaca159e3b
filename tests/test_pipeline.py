"""``webaccel.pipeline``: transformers.js task names over real browser workers."""
from __future__ import annotations

import numpy as np
import pytest

from webaccel import pipeline

pytestmark = pytest.mark.browser


def test_feature_extraction_takes_any_number_of_texts(accelerator):
    texts = [f"sentence number {i} about {'music' if i % 2 else 'markets'}" for i in range(300)]
    embed = pipeline("feature-extraction", accelerator=accelerator)
    got = embed(texts, batch_size=128)  # 300 > the model's batch limit of 256: split
    assert got.shape == (300, 384) and got.dtype == np.float32
    want = accelerator.accelerate("minilm", texts[:100])["embeddings"]
    assert float((got[:100] * want).sum(axis=1).min()) > 0.9999
    one = embed.encode(texts[7])
    assert one.shape == (384,) and float(one @ got[7]) > 0.9999
    with pytest.raises(Exception, match="pooling"):
        embed(["x"], pooling="cls")
    embed.close()  # a shared accelerator stays open
    assert accelerator.accelerate("minilm", "still open")["embeddings"].shape == (1, 384)


def test_image_classification_returns_labels_best_first(accelerator):
    image = np.random.default_rng(0).integers(0, 255, (240, 320, 3), dtype=np.uint8)
    classify = pipeline("image-classification", accelerator=accelerator)
    out = classify(image)
    assert [set(r) for r in out] == [{"label", "score"}] * 2
    assert out[0]["score"] >= out[1]["score"] and {r["label"] for r in out} == {"sfw", "nsfw"}
    assert abs(sum(r["score"] for r in out) - 1) < 1e-4
    assert len(classify([image, image])) == 2 and classify(image, top_k=1) == out[:1]


def test_text_generation_returns_generated_text(accelerator):
    pytest.importorskip("torch")
    from webaccel.generation import GenerationParams, load_generation_model
    from webaccel.generation.native import NativeGenerator
    from webaccel.generation.testing import tiny_llama_spec

    tiny_llama_spec("tiny-llama")
    _, gm, path = load_generation_model("tiny-llama")
    native = NativeGenerator(path, kv_heads=gm.kv_heads, head_dim=gm.head_dim)
    want = gm.decode(native.generate(gm.encode("Once upon"), GenerationParams(max_tokens=8),
                                     stop_token_ids=gm.eos_token_ids).token_ids)
    generate = pipeline("text-generation", model="tiny-llama", accelerator=accelerator,
                        device="wasm")
    out = generate("Once upon", max_new_tokens=8, do_sample=False)
    assert out == [{"generated_text": "Once upon" + want}]
    chat = generate([{"role": "user", "content": "hi"}], max_new_tokens=4, do_sample=False)
    assert chat[0]["generated_text"][-1]["role"] == "assistant"
