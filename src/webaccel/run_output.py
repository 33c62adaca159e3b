"""What ``webaccel run`` prints for a result (standard library only: the quick path
of :mod:`webaccel.quickrun` prints with it before numpy or rich are imported).

``result`` is JSON-shaped (numpy values already turned into lists and floats).
Lines go through ``emit(line)``: print by default, the full CLI's console there.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any


def plain(value: Any, digits: int = 4) -> Any:
    """Numbers as people read them (``0.9731``, not ``0.97314182...``)."""
    if isinstance(value, float):
        return round(value, digits)
    if isinstance(value, dict):
        return {k: plain(v, digits) for k, v in value.items()}
    if isinstance(value, list):
        return [plain(v, digits) for v in value]
    return value


def show(key: str, value: Any, emit: Callable[[str], None] = print) -> None:
    value = plain(value)
    text = json.dumps(value, ensure_ascii=False) if isinstance(value, dict | list) else value
    emit(f"{key}: {text}")


def print_result(result: dict[str, Any], *, as_json: bool,
                 emit: Callable[[str], None] = print) -> None:
    """One input's result: embeddings become ``embedding`` (the first row)."""
    if "embeddings" in result:
        result["embedding"] = result.pop("embeddings")[0]
        result["truncated"] = result["truncated"][0]
    if as_json:
        print(json.dumps(result))
        return
    if "embedding" in result:
        vec = result["embedding"]
        show("embedding", f"{len(vec)} floats, first 4: {plain(list(vec[:4]))}", emit)
    elif "text" in result:
        show("text", result["text"], emit)
    elif "results" in result:
        res = result["results"]
        if "label" in res:
            for key in ("label", "score", "scores"):
                show(key, res[key], emit)
        if "regions" in res:
            show("regions", res["regions"], emit)
            show("size", res["size"], emit)
            if "heatmap" in res:
                hm = res["heatmap"]
                top = max(max(row) for row in hm)
                show("heatmap", f"{len(hm)}x{len(hm[0])}, max {float(top):.4f} "
                     "(--json for the values)", emit)
    skip = {"embedding", "embeddings", "user_agent", "text", "results", "outputs"}
    for key, value in result.items():
        if key not in skip:
            show(key, value, emit)
