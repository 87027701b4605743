"""Metrics: SSIM vs skimage, PSNR known values and cap, region metrics, accumulator, flicker."""

from __future__ import annotations

import json
import math

import cv2
import numpy as np
import pytest
from skimage.metrics import structural_similarity

from revavatar.core.canonical import CanonicalLayout
from revavatar.core.composite import ShapeError
from revavatar.core.metrics import (
    PSNR_CAP_DB,
    MetricAccumulator,
    psnr,
    region_metrics,
    ssim,
    FlickerMeter,
    temporal_flicker,
)

LAYOUT = CanonicalLayout(256)


def _textured(seed: int, shape: tuple[int, ...] = (256, 256, 3)) -> np.ndarray:
    """Smooth random texture in [30, 220] (no clipping when small noise is added)."""
    rng = np.random.default_rng(seed)
    img = cv2.GaussianBlur(rng.uniform(0, 255, shape).astype(np.float32), (0, 0), 3)
    img = (img - img.min()) / (img.max() - img.min()) * 190 + 30
    return np.rint(img).astype(np.uint8)


def _skimage(a: np.ndarray, b: np.ndarray, channel_axis: int | None) -> float:
    return float(
        structural_similarity(
            a,
            b,
            gaussian_weights=True,
            sigma=1.5,
            use_sample_covariance=False,
            data_range=255,
            channel_axis=channel_axis,
        )
    )


def test_identical_images() -> None:
    a = _textured(0)
    assert ssim(a, a) == pytest.approx(1.0, abs=1e-12)
    assert ssim(a, a, on="bgr") == pytest.approx(1.0, abs=1e-12)
    assert psnr(a, a) == PSNR_CAP_DB == 100.0


def test_ssim_matches_skimage() -> None:
    rng = np.random.default_rng(1)
    a = _textured(2)
    b = np.clip(a.astype(int) + rng.normal(0, 12, a.shape), 0, 255).astype(np.uint8)
    b = cv2.GaussianBlur(b, (3, 3), 0)
    ga, gb = cv2.cvtColor(a, cv2.COLOR_BGR2GRAY), cv2.cvtColor(b, cv2.COLOR_BGR2GRAY)
    expected_luma = _skimage(ga, gb, None)
    assert ssim(a, b) == pytest.approx(expected_luma, abs=1e-9)
    assert ssim(a, b, on="bgr") == pytest.approx(_skimage(a, b, 2), abs=1e-9)
    assert 0.3 < ssim(a, b) < 0.99  # a real, non-trivial value
    g1, g2 = a[:, :, 0], b[:, :, 1]
    assert ssim(g1, g2) == pytest.approx(_skimage(g1, g2, None), abs=1e-9)
    # odd, non-square region sizes (the eye band is 195 x 87 at size 256)
    assert ssim(a[:87, :195], b[:87, :195]) == pytest.approx(
        _skimage(
            cv2.cvtColor(a[:87, :195], cv2.COLOR_BGR2GRAY),
            cv2.cvtColor(b[:87, :195], cv2.COLOR_BGR2GRAY),
            None,
        ),
        abs=1e-9,
    )


def test_psnr_known_values() -> None:
    a = _textured(3)
    rng = np.random.default_rng(4)
    # exact +-5 everywhere: MSE 25 -> 10 log10(65025 / 25) = 34.1514 dB
    sign = rng.choice([-5, 5], a.shape)
    b = (a.astype(int) + sign).astype(np.uint8)
    assert psnr(a, b) == pytest.approx(10 * math.log10(255**2 / 25), abs=1e-9)
    assert psnr(a, b) == pytest.approx(34.1514, abs=1e-3)
    # Gaussian noise sigma 10 (+ rounding, variance 1/12): 28.13 dB within 0.1 dB
    noisy = np.rint(a + rng.normal(0, 10, a.shape)).clip(0, 255).astype(np.uint8)
    assert psnr(a, noisy) == pytest.approx(10 * math.log10(255**2 / (100 + 1 / 12)), abs=0.1)
    # one pixel off by 1 in 256*256*3 values: 101.1 dB, reported at the cap
    c = a.copy()
    c[0, 0, 0] += 1
    assert psnr(a, c) == PSNR_CAP_DB
    # luminance variant: a uniform +3 on all channels is +3 in Y -> MSE 9 (rounding allowed)
    d = (a.astype(int) + 3).astype(np.uint8)
    assert psnr(a, d, on="luma") == pytest.approx(10 * math.log10(255**2 / 9), abs=0.2)


def test_bad_inputs() -> None:
    a = _textured(5)
    with pytest.raises(ShapeError, match="the shape of a"):
        ssim(a, a[:100])
    with pytest.raises(ShapeError, match="dtype uint8"):
        psnr(a, a.astype(np.float32))
    with pytest.raises(ValueError, match="at least 11x11"):
        ssim(a[:8, :8], a[:8, :8])
    with pytest.raises(ValueError, match="unknown channel mode 'rgb'"):
        psnr(a, a, on="rgb")


def test_region_metrics_use_the_eye_band() -> None:
    gt = _textured(6)
    pred = gt.copy()
    x0, y0, x1, y1 = LAYOUT.region("eye_band").box_px
    pred[y1 + 5 :] = 0  # damage only below the eye band
    m = region_metrics(pred, gt, LAYOUT)
    assert set(m) == {"full", "eye"} and set(m["full"]) == set(m["eye"]) == {"ssim", "psnr"}
    assert m["eye"] == {"ssim": pytest.approx(1.0), "psnr": PSNR_CAP_DB}
    assert m["full"]["ssim"] < 0.9 and m["full"]["psnr"] < 20
    pred2 = gt.copy()
    pred2[y0 + 10 : y1 - 10, x0 + 10 : x1 - 10] = 128  # damage inside the eye band
    m2 = region_metrics(pred2, gt, LAYOUT)
    assert m2["eye"]["psnr"] < m2["full"]["psnr"]  # same error, smaller area -> lower PSNR
    assert m2["eye"]["ssim"] < m2["full"]["ssim"]
    with pytest.raises(ShapeError):
        region_metrics(pred[:128, :128], gt[:128, :128], LAYOUT)


def test_accumulator_means_and_json() -> None:
    acc = MetricAccumulator(LAYOUT)
    assert acc.summary() == {"frames": 0}
    acc.add({"full": {"ssim": 0.8, "psnr": 30.0}, "eye": {"ssim": 0.6, "psnr": 20.0}})
    acc.add({"full": {"ssim": 0.9, "psnr": 34.0}, "eye": {"ssim": 0.7, "psnr": 24.0}})
    gt = _textured(7)
    one = acc.update(gt, gt)
    assert one["full"]["psnr"] == PSNR_CAP_DB
    s = acc.summary()
    assert s["frames"] == 3
    assert s["full"]["psnr"] == pytest.approx((30 + 34 + 100) / 3)
    assert s["eye"]["ssim"] == pytest.approx((0.6 + 0.7 + 1.0) / 3)
    assert s["std"]["full"]["psnr"] == pytest.approx(np.std([30, 34, 100]))
    assert json.loads(json.dumps(s)) == s
    with pytest.raises(ValueError, match="needs a layout"):
        MetricAccumulator().update(gt, gt)


def test_temporal_flicker() -> None:
    base = np.full((32, 32, 3), 100, np.uint8)
    still = [base] * 4
    assert temporal_flicker(still, still) == 0.0
    # output alternates by 10 inside a box while the truth stands still
    flick = [base.copy() for _ in range(4)]
    for k in (1, 3):
        flick[k][8:16, 8:16] = 110
    assert temporal_flicker(flick, still, (8, 8, 16, 16)) == pytest.approx(10.0)
    assert temporal_flicker(flick, still) == pytest.approx(10.0 * 64 / 1024)
    assert temporal_flicker(flick, still, (20, 20, 30, 30)) == 0.0
    # output that moves exactly like the truth does not flicker; a frozen one is negative
    assert temporal_flicker(flick, flick) == 0.0
    assert temporal_flicker(still, flick, (8, 8, 16, 16)) == pytest.approx(-10.0)
    with pytest.raises(ValueError, match="at least 2 frames"):
        temporal_flicker([base], [base])
    with pytest.raises(ValueError, match="3 outputs but 4"):
        temporal_flicker(still[:3], still)


def test_flicker_meter_streams_the_same_figure_per_region() -> None:
    rng = np.random.default_rng(3)
    outs = [rng.integers(0, 256, (24, 24, 3), dtype=np.uint8) for _ in range(5)]
    gts = [rng.integers(0, 256, (24, 24, 3), dtype=np.uint8) for _ in range(5)]
    box = (4, 6, 20, 14)
    meter = FlickerMeter({"full": None, "box": box})
    assert meter.summary() == {}
    for o, t in zip(outs, gts, strict=True):
        meter.add(o, t)
    s = meter.summary()
    assert meter.pairs == 4
    assert s["full"] == pytest.approx(temporal_flicker(outs, gts))
    assert s["box"] == pytest.approx(temporal_flicker(outs, gts, box))
    assert s["full"] != pytest.approx(s["box"])
    truth = meter.truth_change()
    assert truth["full"] == pytest.approx(temporal_flicker(gts, [gts[0]] * 5))
