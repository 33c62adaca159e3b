"""The top-level package, transformers.js names, and output for pipes and logs."""
from __future__ import annotations

import io
import logging
import subprocess
import sys
import time
import warnings

import pytest

import webaccel
from webaccel.errors import InvalidInputError

PUBLIC = {
    "IPFSWebAccelerator",
    "Pipeline",
    "ResourcePoolBridgeIntegration",
    "WebAccelError",
    "WebAccelerator",
    "create_ipfs_web_accelerator",
    "pipeline",
    "register_onnx",
}


def test_all_lists_exactly_the_public_names():
    assert set(webaccel.__all__) == PUBLIC
    for name in webaccel.__all__:
        assert getattr(webaccel, name) is not None
    from webaccel import WebAccelerator, pipeline  # the README's import
    from webaccel.api import WebAccelerator as direct

    assert WebAccelerator is direct and callable(pipeline)
    with pytest.raises(AttributeError):
        _ = webaccel.no_such_name


def test_pipeline_stays_the_function_after_its_module_is_imported():
    import webaccel.pipelines  # noqa: F401
    from webaccel import pipeline

    assert callable(pipeline) and pipeline.__name__ == "pipeline"


@pytest.mark.parametrize(
    "dtype,variant",
    [("fp32", "fp32"), ("fp16", "fp16"), ("q8", "int8"), ("int8", "int8"), ("uint8", "int8"),
     ("q4", "int4"), ("q4f16", "int4"), ("mixed", "mixed"), ("INT4", "int4"), ("auto", None)],
)
def test_transformers_js_dtypes_map_to_our_variants(dtype, variant):
    from webaccel.dtypes import to_precision

    assert to_precision(dtype) == variant


def test_an_unknown_dtype_names_every_accepted_one():
    from webaccel.dtypes import to_precision

    with pytest.raises(InvalidInputError) as info:
        to_precision("q2")
    for name in ("fp32", "fp16", "int8", "int4", "mixed", "q8 -> int8", "uint8 -> int8",
                 "q4 -> int4", "q4f16 -> int4"):
        assert name in info.value.message


@pytest.mark.parametrize(
    "task,ours,model",
    [("feature-extraction", "text_embedding", "minilm"),
     ("image-classification", "image_classification", "nsfw-cnn"),
     ("automatic-speech-recognition", "audio", "whisper-tiny-en"),
     ("text-generation", "text_generation", "smollm2"),
     ("text_embedding", "text_embedding", "minilm")],
)
def test_task_names(task, ours, model):
    from webaccel.dtypes import resolve_task

    assert resolve_task(task) == (ours, model)


def test_pipeline_refuses_an_unknown_task_or_a_model_of_another_task():
    from webaccel import pipeline

    with pytest.raises(InvalidInputError, match="feature-extraction"):
        pipeline("summarization")
    with pytest.raises(InvalidInputError, match="not feature-extraction"):
        pipeline("feature-extraction", model="nsfw-cnn")


def test_plain_console_does_not_wrap_or_cut():
    from rich.table import Table

    from webaccel.terminal import make_console

    buf = io.StringIO()  # not a terminal
    console = make_console(file=buf)
    key = "wa-" + "k" * 150
    console.print(f"  OpenAI API: http://127.0.0.1:8700/v1  (API key: {key})")
    table = Table("browser", "webgpu")
    table.add_row("chromium-with-a-long-name", "swiftshader (software adapter, not a GPU)")
    console.print(table)
    out = buf.getvalue()
    assert f"(API key: {key})\n" in out  # one line
    assert "chromium-with-a-long-name" in out and "…" not in out
    assert "\x1b[" not in out  # no colour codes in logs


def test_stage_lines_are_one_per_event_and_quiet_when_fast(caplog):
    from webaccel.progress import stage

    with caplog.at_level(logging.INFO, logger="webaccel.progress"):
        with stage("fast step", after_s=0.5):
            pass
        with stage("slow step", after_s=0.05):
            time.sleep(0.2)
        with pytest.raises(RuntimeError), stage("failing step"):
            raise RuntimeError("x")
    messages = [r.getMessage() for r in caplog.records]
    assert not any("fast step" in m for m in messages)
    assert messages[0] == "slow step ..." and messages[1].startswith("slow step: done in ")
    assert messages[2] == "failing step ..." and "failed after" in messages[3]


def test_quiet_third_party_silences_warnings_tqdm_and_quantizer_logs(capsys):
    from webaccel.progress import quiet_third_party

    with quiet_third_party():
        import onnxruntime.quantization.matmul_nbits_quantizer  # noqa: F401 - basicConfig(INFO)

        warnings.warn("TracerWarning: converting a tensor to a Python boolean", stacklevel=1)
        from tqdm import tqdm

        for _ in tqdm(range(3)):
            pass
        logging.getLogger("onnxruntime.quantization.matmul_nbits_quantizer").info("node dump")
    err = capsys.readouterr().err
    assert "TracerWarning" not in err and "node dump" not in err and "it/s" not in err


def test_doctor_cells_are_never_cut():
    from rich.console import Console

    from webaccel.doctor import render
    from webaccel.terminal import make_console

    caps = {
        "webgpu": {"available": True, "vendor": "google", "architecture": "swiftshader",
                   "isFallbackAdapter": False, "software": True, "shaderF16": True},
        "webnn": {"available": False, "present": True},
        "wasm": {"simd": True, "threads": False, "crossOriginIsolated": True},
    }
    report = {
        "browsers": [{"browser": "chromium", "installed": True, "capabilities": caps,
                      "backends": ["webgpu", "wasm"]},
                     {"browser": "firefox", "installed": False}],
        "launchers": [{"launcher": "selenium", "browser": "chromium", "ok": False,
                       "why": "chromedriver not found: apt-get install chromium-driver"}],
    }
    narrow = io.StringIO()
    render(report, Console(file=narrow, width=70, force_terminal=True, color_system=None))
    piped = io.StringIO()
    render(report, make_console(file=piped))
    assert "…" not in narrow.getvalue() and "│ chromium │" in narrow.getvalue()  # folded, not cut
    assert "…" not in piped.getvalue() and "google/swiftshader" in piped.getvalue()
    assert "chromedriver not found: apt-get install chromium-driver" in piped.getvalue()


def test_cli_start_does_not_import_transformers_yet_keeps_it_quiet():
    """Importing transformers takes ~2 s; every `webaccel` command paid it to set its
    log level.  It is now set through the environment that transformers reads on import."""
    code = (
        "import os, sys\n"
        "os.environ.pop('TRANSFORMERS_VERBOSITY', None)\n"
        "os.environ.pop('HF_HUB_DISABLE_PROGRESS_BARS', None)\n"
        "import webaccel.cli\n"
        "from webaccel.progress import silence_loggers\n"
        "silence_loggers()\n"
        "assert 'transformers' not in sys.modules, 'transformers imported at start-up'\n"
        "from transformers.utils import logging as hf\n"
        "assert hf.get_verbosity() == hf.ERROR and not hf.is_progress_bar_enabled()\n"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
