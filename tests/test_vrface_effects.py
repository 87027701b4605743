"""VR-Face headset effects: each changes the image the expected way, is seeded, rejects bad params."""

from __future__ import annotations

from dataclasses import fields

import cv2
import numpy as np
import pytest

from revavatar.core.calibration import load_calibration
from revavatar.core.canonical import CanonicalLayout
from revavatar.vrface import effects as fx

H, W = 96, 128


def _textured(seed: int = 0, gray: bool = False) -> np.ndarray:
    rng = np.random.default_rng(seed)
    base = cv2.resize(
        rng.uniform(40, 215, (12, 16, 3)).astype(np.float32), (W, H), interpolation=cv2.INTER_CUBIC
    )
    img = np.clip(base + rng.normal(0, 12, base.shape), 0, 255).astype(np.uint8)
    return cv2.cvtColor(img, cv2.COLOR_BGR2GRAY) if gray else img


def _flat(value: int = 160, gray: bool = True) -> np.ndarray:
    shape = (H, W) if gray else (H, W, 3)
    return np.full(shape, value, np.uint8)


def _run(name: str, image: np.ndarray, seed: int = 0, **params: object) -> np.ndarray:
    fn, _ = fx.EFFECTS[name]
    return fn(image, np.random.default_rng(seed), **params)


def _sharpness(img: np.ndarray) -> float:
    return float(cv2.Laplacian(img.astype(np.float32), cv2.CV_32F).var())


def test_registry_lists_every_effect_with_its_params() -> None:
    assert set(fx.EFFECTS) == {
        "lens_distortion",
        "ir_look",
        "vignetting",
        "blur",
        "sensor_noise",
        "lighting",
        "headset_mask",
        "occlusion",
        "eyebrow_reduction",
    }
    rng = np.random.default_rng(1)
    for name, (fn, cls) in fx.EFFECTS.items():
        p = cls.draw(rng)
        assert isinstance(p, cls)
        for img in (_textured(), _textured(gray=True)):
            out = fn(img, np.random.default_rng(2), **{f.name: getattr(p, f.name) for f in fields(p)})
            assert out.shape == img.shape and out.dtype == np.uint8, name
            assert not np.array_equal(out, img), name
        with pytest.raises(ValueError, match="unknown parameter"):
            fn(_textured(), rng, bogus=1)
        with pytest.raises(ValueError, match="uint8"):
            fn(np.zeros((4, 4), np.float32), rng)


def test_lens_distortion_barrel_pulls_points_in_pincushion_pushes_out() -> None:
    img = np.zeros((H, W), np.uint8)
    cv2.circle(img, (W // 2 + 45, H // 2), 3, 255, -1)

    def peak_x(out: np.ndarray) -> float:
        ys, xs = np.nonzero(out > 100)
        return float(xs.mean())

    x0 = peak_x(img)
    assert peak_x(_run("lens_distortion", img, k1=0.3, k2=0.0)) < x0 - 2  # barrel
    assert peak_x(_run("lens_distortion", img, k1=-0.3, k2=0.0)) > x0 + 2  # pincushion
    assert np.array_equal(_run("lens_distortion", img, k1=0.0, k2=0.0), img)
    with pytest.raises(ValueError, match=r"k1 must be in \[-0.5, 0.5\]"):
        _run("lens_distortion", img, k1=0.9)


def test_ir_look_desaturates_and_brightens_skin() -> None:
    skin = np.zeros((H, W, 3), np.uint8)
    skin[:] = (120, 150, 210)  # BGR skin tone
    out = _run("ir_look", skin, red_weight=0.8, saturation=0.0, brightness=1.0, contrast=1.0)
    assert np.ptp(out.reshape(-1, 3), axis=1).max() == 0  # fully gray
    visible_gray = float(cv2.cvtColor(skin, cv2.COLOR_BGR2GRAY).mean())
    assert out.mean() > visible_gray + 10  # skin brighter than a visible-light gray conversion
    tinted = _run("ir_look", skin, red_weight=0.8, saturation=0.5, brightness=1.0, contrast=1.0)
    assert 0 < np.ptp(tinted.reshape(-1, 3), axis=1).mean() < np.ptp(skin.reshape(-1, 3), axis=1).mean()
    gray = _textured(gray=True)
    punchy = _run("ir_look", gray, red_weight=0.5, saturation=0.0, brightness=1.0, contrast=2.0)
    assert punchy.ndim == 2 and punchy.std() > gray.std()
    for bad in ({"red_weight": 1.5}, {"brightness": 0.0}, {"contrast": 9.0}):
        with pytest.raises(ValueError, match="IRLookParams"):
            _run("ir_look", gray, **bad)


def test_vignetting_darkens_corners_not_centre() -> None:
    img = _flat(200)
    out = _run("vignetting", img, strength=0.6, radius=0.3, power=2.0, cx=0.0, cy=0.0)
    assert out[H // 2, W // 2] == 200
    assert out[0, 0] < 110 and out[-1, -1] < 110
    with pytest.raises(ValueError, match="strength"):
        _run("vignetting", img, strength=1.5)


def test_blur_lowers_sharpness_and_motion_blur_is_directional() -> None:
    img = _textured(gray=True)
    out = _run("blur", img, kind="defocus", radius=3.0)
    assert _sharpness(out) < 0.3 * _sharpness(img)
    motion = _run("blur", img, kind="motion", radius=5.0, angle=0.0).astype(np.float32)
    gx = np.abs(np.diff(motion, axis=1)).mean() / np.abs(np.diff(img.astype(np.float32), axis=1)).mean()
    gy = np.abs(np.diff(motion, axis=0)).mean() / np.abs(np.diff(img.astype(np.float32), axis=0)).mean()
    assert gx < gy  # smeared along x
    with pytest.raises(ValueError, match="kind"):
        _run("blur", img, kind="gaussian")
    with pytest.raises(ValueError, match="radius"):
        _run("blur", img, radius=-1.0)


def test_sensor_noise_is_signal_dependent_and_seeded() -> None:
    img = np.zeros((H, W), np.uint8)
    img[:, W // 2 :] = 220
    a = _run("sensor_noise", img, seed=7, full_well=300.0, read_sigma=1.0)
    b = _run("sensor_noise", img, seed=7, full_well=300.0, read_sigma=1.0)
    c = _run("sensor_noise", img, seed=8, full_well=300.0, read_sigma=1.0)
    assert np.array_equal(a, b) and not np.array_equal(a, c)
    resid = a.astype(np.float32) - img
    dark, bright = resid[:, 5 : W // 2 - 5], resid[:, W // 2 + 5 :]
    assert bright.std() > 3 * dark[dark > -1].std()  # shot noise grows with the signal
    assert abs(float(bright.mean())) < 1.0
    with pytest.raises(ValueError, match="full_well"):
        _run("sensor_noise", img, full_well=0.0)


def test_lighting_gain_gamma_and_gradient() -> None:
    img = _flat(100)
    assert _run("lighting", img, gain=1.5).mean() == pytest.approx(150, abs=1)
    assert _run("lighting", img, gamma=2.0).mean() < 60
    ramp = _run("lighting", img, gradient=0.5, angle=0.0)
    assert ramp[:, -1].mean() > 140 and ramp[:, 0].mean() < 60  # brighter toward +x
    with pytest.raises(ValueError, match="gradient"):
        _run("lighting", img, gradient=2.0)


def test_headset_mask_darkens_the_border() -> None:
    img = _flat(180, gray=False)
    out = _run("headset_mask", img, margin=0.05, corner_radius=0.4, softness=3.0, level=5.0)
    assert (out[H // 2, W // 2] == 180).all()
    assert (out[0, 0] <= 6).all() and (out[2, W // 2] <= 6).all()
    assert out[H // 2, W // 2 + 30].min() == 180
    with pytest.raises(ValueError, match="margin"):
        _run("headset_mask", img, margin=0.6)


def test_occlusion_adds_dark_blobs_deterministically() -> None:
    img = _flat(180)
    a = _run("occlusion", img, seed=3, n_blobs=3, size=0.15, darkness=0.9, smudge=0.0)
    b = _run("occlusion", img, seed=3, n_blobs=3, size=0.15, darkness=0.9, smudge=0.0)
    c = _run("occlusion", img, seed=4, n_blobs=3, size=0.15, darkness=0.9, smudge=0.0)
    assert np.array_equal(a, b) and not np.array_equal(a, c)
    assert a.mean() < img.mean() - 5 and a.min() < 60
    assert np.array_equal(_run("occlusion", img, n_blobs=0, smudge=0.0), img)
    smudged = _run("occlusion", _textured(gray=True), seed=1, n_blobs=0, size=0.2, smudge=1.0)
    assert _sharpness(smudged) < _sharpness(_textured(gray=True))
    with pytest.raises(ValueError, match="integer"):
        _run("occlusion", img, n_blobs=1.5)
    with pytest.raises(ValueError, match="n_blobs"):
        _run("occlusion", img, n_blobs=20)


def test_occlusion_fields_are_what_the_occlusion_did() -> None:
    """The fields drawn from the same seed rebuild the occluded frame from the whole-frame haze
    (the effect blurs only the smudge's window, to the same values)."""
    img = _textured(gray=True)
    params = {"n_blobs": 3, "size": 0.15, "darkness": 0.8, "smudge": 0.5}
    out = fx.occlusion(img, np.random.default_rng(7), **params)
    occ = fx.occlusion_fields(img.shape, np.random.default_rng(7), **params)
    assert occ.gain.shape == img.shape and occ.gain.min() < 0.5 and occ.gain.max() == 1.0
    assert occ.smudge is not None and occ.window is not None and occ.smudge.max() > 0.2
    outside = np.ones(img.shape, bool)
    outside[occ.window] = False
    assert not occ.smudge[outside].any()
    f = img.astype(np.float32)
    rebuilt = occ.gain * (f * (1.0 - occ.smudge) + occ.haze(f) * occ.smudge)
    assert np.abs(rebuilt - out).max() <= 0.5 + 1e-3  # the effect's rounding only
    assert np.array_equal(fx.apply_occlusion(img, occ), out)  # one draw, applied
    plain = fx.occlusion_fields(img.shape, np.random.default_rng(7), n_blobs=1, smudge=0.0)
    assert plain.smudge is None and plain.window is None


def test_eyebrow_reduction_only_touches_the_band() -> None:
    img = _textured(gray=True)
    out = _run("eyebrow_reduction", img, y0=0.1, y1=0.4, strength=0.9, darken=0.3, feather=0.02)
    band, below = slice(int(0.15 * H), int(0.35 * H)), slice(int(0.5 * H), H)
    assert out[band].std() < 0.6 * img[band].std() and out[band].mean() < img[band].mean() - 10
    assert np.array_equal(out[below], img[below])
    with pytest.raises(ValueError, match="y0 < y1"):
        _run("eyebrow_reduction", img, y0=0.5, y1=0.2)


def test_eyebrow_band_follows_camera_geometry() -> None:
    calib = load_calibration(
        __import__("pathlib").Path(__file__).resolve().parents[1] / "calibration" / "generic.yaml"
    )
    layout = CanonicalLayout(256)
    band = fx.eyebrow_band(calib.cameras["left_eye"], layout, "left_eye")
    assert band is not None
    y0, y1 = band
    assert 0.0 <= y0 < y1 <= 0.6  # brows are in the upper part of an eye camera looking up
    fx.EyebrowParams(y0=y0, y1=y1)  # usable as parameters as is


def test_apply_effects_records_and_replays() -> None:
    img = _textured()
    names = ["ir_look", "blur", "vignetting", "sensor_noise"]
    out1, rec1 = fx.apply_effects(img, names, np.random.default_rng(11))
    out2, rec2 = fx.apply_effects(img, names, np.random.default_rng(11))
    out3, _ = fx.apply_effects(img, names, np.random.default_rng(12))
    assert np.array_equal(out1, out2) and rec1 == rec2 and not np.array_equal(out1, out3)
    assert [r["effect"] for r in rec1] == names
    # replay from the records alone
    replay = img
    for r in rec1:
        replay = fx.EFFECTS[r["effect"]][0](replay, np.random.default_rng(r["seed"]), **r["params"])
    assert np.array_equal(replay, out1)
    # fixed parameters are used as given (instance or mapping)
    fixed = {
        "blur": {"kind": "defocus", "radius": 1.0, "angle": 0.0},
        "vignetting": fx.VignetteParams(strength=0.0),
    }
    _, rec = fx.apply_effects(img, names, np.random.default_rng(0), params=fixed)
    assert rec[1]["params"] == {"kind": "defocus", "radius": 1.0, "angle": 0.0}
    assert rec[2]["params"]["strength"] == 0.0
    with pytest.raises(ValueError, match="unknown effect 'sepia'"):
        fx.apply_effects(img, ["sepia"], np.random.default_rng(0))
    with pytest.raises(ValueError, match="not applied"):
        fx.apply_effects(img, ["blur"], np.random.default_rng(0), params={"vignetting": {}})
    with pytest.raises(ValueError, match="radius"):
        fx.apply_effects(img, ["blur"], np.random.default_rng(0), params={"blur": {"radius": 99.0}})


def _occlusion_full_image(image: np.ndarray, seed: int, n_blobs: int, size: float, darkness: float,
                          smudge: float) -> np.ndarray:
    """Reference: the occlusion effect with every blur over the whole image (no windows)."""
    rng = np.random.default_rng(seed)
    h, w = image.shape[:2]

    def blob(sz: float) -> np.ndarray:
        cx, cy = rng.uniform(0, w), rng.uniform(0, h)
        ax, ay = sz * min(h, w) * rng.uniform(0.6, 1.4), sz * min(h, w) * rng.uniform(0.6, 1.4)
        m = np.zeros((h, w), np.float32)
        cv2.ellipse(m, (round(cx), round(cy)), (max(round(ax), 1), max(round(ay), 1)),
                    float(rng.uniform(0, 180)), 0, 360, 1.0, -1, cv2.LINE_AA)
        return cv2.GaussianBlur(m, (0, 0), max(0.25 * min(ax, ay), 0.5))

    f = image.astype(np.float32)
    gain = np.ones((h, w), np.float32)
    for _ in range(n_blobs):
        gain *= 1.0 - darkness * blob(size)
    if smudge > 0:
        s = blob(2.0 * size) * smudge
        hazy = cv2.GaussianBlur(f, (0, 0), 0.02 * min(h, w) + 1.0) * 0.8 + 0.2 * 200.0
        s3 = s[..., None] if image.ndim == 3 else s
        f = f * (1.0 - s3) + hazy * s3
    out = f * (gain[..., None] if image.ndim == 3 else gain)
    return np.clip(np.rint(out), 0, 255).astype(np.uint8)


@pytest.mark.parametrize("gray", [True, False])
def test_windowed_blurs_equal_full_image_blurs(gray: bool) -> None:
    """Occlusion and eyebrow reduction blur only windows (speed); the pixels must not change."""
    big = cv2.resize(_textured(5, gray=gray), (320, 240), interpolation=cv2.INTER_LINEAR)
    for seed in range(12):
        size = (0.03, 0.12, 0.3, 0.5)[seed % 4]  # windows from tiny to the whole image
        kw = {"n_blobs": seed % 4 + 1, "size": size, "darkness": 0.8, "smudge": 0.7 * (seed % 2)}
        for img in (big, _textured(seed, gray=gray)):
            assert np.array_equal(_run("occlusion", img, seed=seed, **kw),
                                  _occlusion_full_image(img, seed, **kw))  # type: ignore[arg-type]
    for y0, y1 in ((0.0, 0.2), (0.3, 0.5), (0.7, 1.0)):
        p = {"y0": y0, "y1": y1, "strength": 0.8, "darken": 0.3, "feather": 0.05}
        f = big.astype(np.float32)
        y = (np.arange(240, dtype=np.float32) + 0.5) / 240
        band = np.clip((y - y0) / 0.05 + 0.5, 0, 1) * np.clip((y1 - y) / 0.05 + 0.5, 0, 1)
        local = cv2.GaussianBlur(f, (0, 0), 0.06 * 240 + 1.0)
        reduced = (local + (f - local) * 0.2) * 0.7
        a = band[:, None] if gray else band[:, None, None]
        ref = np.clip(np.rint(f * (1.0 - a) + reduced * a), 0, 255).astype(np.uint8)
        assert np.array_equal(_run("eyebrow_reduction", big, **p), ref)
