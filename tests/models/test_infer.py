from __future__ import annotations

from pathlib import Path

import onnx
import pytest
from onnx import TensorProto, helper

from webaccel.models.infer import graph_inputs, infer_model_type

F, I64 = TensorProto.FLOAT, TensorProto.INT64


def io_model(
    inputs: list[tuple[str, int, list]], outputs: list[tuple[str, int, list]]
) -> onnx.ModelProto:
    """A graph with only the given signature (inference reads nothing else)."""
    ins = [helper.make_tensor_value_info(n, t, d) for n, t, d in inputs]
    outs = [helper.make_tensor_value_info(n, t, d) for n, t, d in outputs]
    nodes = [helper.make_node("Identity", [inputs[0][0]], [o[0]]) for o in outputs]
    return helper.make_model(helper.make_graph(nodes, "g", ins, outs))


CASES = {
    "minilm": (
        io_model(
            [
                ("input_ids", I64, ["b", "s"]),
                ("attention_mask", I64, ["b", "s"]),
                ("token_type_ids", I64, ["b", "s"]),
            ],
            [("last_hidden_state", F, ["b", "s", 384])],
        ),
        "text_embedding",
    ),
    "sentence-embedding": (
        io_model([("input_ids", I64, ["b", "s"])], [("sentence_embedding", F, ["b", 384])]),
        "text_embedding",
    ),
    "nsfw-cnn": (
        io_model([("input_0", F, ["batch", 224, 224, 3])], [("4195", F, ["n", 2])]),
        "image_classification",
    ),
    "vit-saliency": (
        io_model(
            [("input_image", F, ["b", 3, 224, 224])],
            [("output_importance", F, ["b", "c", "h", "w"])],
        ),
        "vision",
    ),
    "whisper-encoder": (
        io_model(
            [("input_features", F, ["b", 80, 3000])], [("cross_key_0", F, ["b", 6, 1500, 64])]
        ),
        "audio",
    ),
    "wav2vec-like": (
        io_model([("input_values", F, ["b", "samples"])], [("logits", F, ["b", "t", 32])]),
        "audio",
    ),
    "llm-with-cache": (
        io_model(
            [
                ("input_ids", I64, ["b", "s"]),
                ("attention_mask", I64, ["b", "t"]),
                ("past_key_values.0.key", F, ["b", 3, "p", 64]),
            ],
            [("logits", F, ["b", "s", 49152]), ("present.0.key", F, ["b", 3, "t", 64])],
        ),
        "text_generation",
    ),
    "llm-no-cache": (
        io_model([("input_ids", I64, ["b", "s"])], [("logits", F, ["b", "s", 32000])]),
        "text_generation",
    ),
    "text-classifier": (
        io_model([("input_ids", I64, ["b", "s"])], [("logits", F, ["b", 2])]),
        "unknown",
    ),
}


@pytest.mark.parametrize("name", list(CASES))
def test_graph_rules(name: str) -> None:
    model, task = CASES[name]
    guess = infer_model_type(model)
    assert guess.task == task, guess
    assert guess.reason


def test_config_wins_over_graph() -> None:
    model = CASES["minilm"][0]
    assert (
        infer_model_type(model, {"model_type": "bert", "architectures": ["BertModel"]}).task
        == "text_embedding"
    )
    g = infer_model_type(model, {"architectures": ["LlamaForCausalLM"], "model_type": "llama"})
    assert (g.task, g.source) == ("text_generation", "config")
    assert (
        infer_model_type(
            model, {"model_type": "whisper", "architectures": ["WhisperForConditionalGeneration"]}
        ).task
        == "audio"
    )
    assert (
        infer_model_type(model, {"architectures": ["ViTForImageClassification"]}).task
        == "image_classification"
    )
    # An undecisive config falls through to the graph.
    assert infer_model_type(model, {"model_type": "something-new"}).source == "graph"


def test_initializers_listed_as_inputs_are_ignored() -> None:
    model = CASES["nsfw-cnn"][0]
    w = helper.make_tensor("w", F, [2], [0.0, 1.0])
    model.graph.initializer.append(w)
    model.graph.input.insert(0, helper.make_tensor_value_info("w", F, [2]))
    assert [s.name for s in graph_inputs(model)] == ["input_0"]
    assert infer_model_type(model).task == "image_classification"


def test_real_packaged_models() -> None:
    from webaccel.models import vision

    for path, task in (
        (vision.nsfw_onnx_path, "image_classification"),
        (vision.saliency_onnx_path, "vision"),
    ):
        try:
            p = Path(path())
        except Exception as exc:
            pytest.skip(str(exc))
        assert infer_model_type(onnx.load(str(p), load_external_data=False)).task == task


def test_exported_minilm_is_a_text_embedding(minilm_onnx: Path) -> None:
    guess = infer_model_type(onnx.load(str(minilm_onnx)))
    assert guess.task == "text_embedding", guess
