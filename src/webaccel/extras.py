"""Optional dependencies, installed as extras: ``pip install 'webaccel[NAME]'``.

Only some features need these packages, so the core install stays small:

========== ============ ===================================================
extra      package      needed for
========== ============ ===================================================
audio      scipy        reading WAV files and resampling (whisper-tiny-en)
vision     scipy        saliency regions (vit-saliency's connected components)
report     matplotlib   ``webaccel report``'s PNG plots
selenium   selenium     the Selenium and Selenium Grid launchers
qr         qrcode       the QR code in ``serve --listen``'s join banner
all        all of them
========== ============ ===================================================

:func:`require` imports a module or raises :class:`~webaccel.errors.MissingExtraError`
naming the extra to install.
"""

from __future__ import annotations

import importlib
from types import ModuleType

from webaccel.errors import MissingExtraError

# module (top-level package) -> (extra, pip distribution)
EXTRAS: dict[str, tuple[str, str]] = {
    "scipy": ("audio", "scipy"),
    "matplotlib": ("report", "matplotlib"),
    "selenium": ("selenium", "selenium"),
    "qrcode": ("qr", "qrcode"),
}


def require(module: str, purpose: str, extra: str | None = None) -> ModuleType:
    """``import module``, or a :class:`MissingExtraError` saying which extra brings it."""
    top = module.split(".")[0]
    default_extra, dist = EXTRAS.get(top, (None, top))
    extra = extra or default_extra
    try:
        return importlib.import_module(module)
    except ImportError as exc:
        if exc.name is not None and exc.name.split(".")[0] != top:
            raise  # the package is there but something it imports is broken
        hint = f"pip install 'webaccel[{extra}]'" if extra else f"pip install {dist}"
        raise MissingExtraError(
            f"{purpose} needs the {dist} package, which is not installed: {hint}",
            details={"extra": extra, "package": dist},
        ) from exc
