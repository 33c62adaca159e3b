"""Optional dependencies: each feature that needs an extra says which one when it is
missing (the import is made to fail as an uninstalled package fails)."""
from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest

from webaccel.errors import BackendUnavailableError, MissingExtraError


def _missing(monkeypatch, *modules: str) -> None:
    for name in modules:
        monkeypatch.setitem(sys.modules, name, None)  # `import name` -> ModuleNotFoundError


def test_audio_without_scipy_names_the_audio_extra(monkeypatch, tmp_path):
    from webaccel.models import audio

    _missing(monkeypatch, "scipy", "scipy.io", "scipy.io.wavfile")
    wav = tmp_path / "x.wav"
    wav.write_bytes(b"RIFF....WAVEfmt ")
    with pytest.raises(MissingExtraError) as info:
        audio.load_audio(str(wav))
    assert "pip install 'webaccel[audio]'" in info.value.message
    assert info.value.details == {"extra": "audio", "package": "scipy"}
    assert isinstance(info.value, BackendUnavailableError) and isinstance(info.value, ImportError)


def test_saliency_regions_without_scipy_names_the_vision_extra(monkeypatch):
    from webaccel.models import vision

    _missing(monkeypatch, "scipy", "scipy.ndimage")
    with pytest.raises(MissingExtraError, match=r"webaccel\[vision\]"):
        vision.regions_of_interest(np.ones((8, 8), dtype=np.float32))


def test_selenium_launcher_without_selenium_names_the_selenium_extra(monkeypatch):
    from webaccel.browsers import selenium_launcher

    _missing(monkeypatch, "selenium", "selenium.webdriver")
    with pytest.raises(MissingExtraError, match=r"webaccel\[selenium\]"):
        selenium_launcher.require_selenium()


def test_join_banner_without_qrcode_says_how_to_get_the_qr(monkeypatch):
    from webaccel.browsers import remote

    _missing(monkeypatch, "qrcode")
    banner = remote.join_banner("http://h:8700/join#t")
    assert "http://h:8700/join#t" in banner and "webaccel[qr]" in banner


def test_report_without_matplotlib_is_one_line_naming_the_report_extra(tmp_path):
    code = (
        "import sys; sys.modules['matplotlib'] = None; "
        "from webaccel.cli import main; sys.argv = ['webaccel', 'report', '--out', sys.argv[1], "
        "'--db', sys.argv[2]]; main()"
    )
    proc = subprocess.run([sys.executable, "-c", code, str(tmp_path / "r"),
                           str(tmp_path / "m.duckdb")], capture_output=True, text=True,
                          timeout=120)
    assert proc.returncode == 2, proc.stderr
    assert "pip install 'webaccel[report]'" in proc.stderr and "Traceback" not in proc.stderr

