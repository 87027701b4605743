"""Seeded, parameterised headset effects applied to rendered camera views.

A clean render of a face mesh looks nothing like a headset camera: those are infrared, close-up,
vignetted, noisy, blurred, partly hidden by the headset's own frame and smudged lenses. Each effect
here is one pure function ``effect(image, rng, **params) -> image`` with a frozen params dataclass
that validates its values (out of range -> ValueError naming the field and range) and can draw
random values from a documented default range (``Params.draw(rng)``). :func:`apply_effects` chains
effects by name through the explicit :data:`EFFECTS` registry and records exactly what was drawn
(parameters plus the per-effect seed), so any sample of a data set can be regenerated or audited.

Images are uint8 gray (H, W) or BGR (H, W, 3); every effect returns the same shape and dtype.
"""

from __future__ import annotations

import dataclasses
import functools
import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, fields
from typing import TYPE_CHECKING, Any, ClassVar, Final, TypeVar

import cv2
import numpy as np

if TYPE_CHECKING:
    from revavatar.core.calibration import CameraCalibration
    from revavatar.core.canonical import CanonicalLayout

__all__ = [
    "BLUR_KINDS", "EFFECTS", "BlurParams", "EyebrowParams", "HeadsetMaskParams", "IRLookParams",
    "LensDistortionParams", "LightingParams", "NoiseParams", "OcclusionFields", "OcclusionParams",
    "VignetteParams", "apply_effects", "apply_occlusion", "blur", "eyebrow_band",
    "eyebrow_reduction", "headset_mask", "ir_look", "lens_distortion", "lighting", "occlusion",
    "occlusion_fields", "sensor_noise", "vignetting",
]

P = TypeVar("P", bound="_Params")
BLUR_KINDS: Final = ("defocus", "motion")
#: canonical y fractions of the eyebrows (mediapipe brow landmarks on aligned faces: 0.27-0.35)
_BROW_Y: Final = (0.25, 0.36)


@dataclass(frozen=True)
class _Params:
    """Base: numeric fields checked against LIMITS; ``draw`` samples DRAW ranges uniformly."""

    LIMITS: ClassVar[dict[str, tuple[float, float]]] = {}
    DRAW: ClassVar[dict[str, tuple[float, float]]] = {}
    INTS: ClassVar[tuple[str, ...]] = ()

    def __post_init__(self) -> None:
        for name, (lo, hi) in self.LIMITS.items():
            val = getattr(self, name)
            if not isinstance(val, (int, float)) or isinstance(val, bool) or not lo <= val <= hi:
                msg = f"{type(self).__name__}.{name} must be in [{lo}, {hi}], got {val!r}"
                raise ValueError(msg)

    @classmethod
    def draw(cls: type[P], rng: np.random.Generator) -> P:
        """Random parameters from the default DRAW ranges (ints drawn inclusive)."""
        kw: dict[str, Any] = {}
        for name, (lo, hi) in cls.DRAW.items():
            kw[name] = (
                int(rng.integers(int(lo), int(hi) + 1)) if name in cls.INTS else float(rng.uniform(lo, hi))
            )
        return cls(**kw)


def _params(cls: type[P], params: Mapping[str, Any]) -> P:
    names = [f.name for f in fields(cls)]
    unknown = sorted(set(params) - set(names))
    if unknown:
        msg = f"{cls.__name__}: unknown parameter(s) {', '.join(unknown)}; expected {', '.join(names)}"
        raise ValueError(msg)
    return cls(**params)


def _check_image(image: np.ndarray) -> None:
    if image.dtype != np.uint8 or not (image.ndim == 2 or (image.ndim == 3 and image.shape[2] == 3)):
        msg = f"effects need a uint8 gray (H, W) or BGR (H, W, 3) image, got {image.dtype} {image.shape}"
        raise ValueError(msg)


def _to_u8(x: np.ndarray) -> np.ndarray:
    """Round half to even and saturate to uint8 (in place on ``x``, a float temporary)."""
    np.rint(x, out=x)
    np.clip(x, 0, 255, out=x)
    return x.astype(np.uint8)


def _gain(image: np.ndarray, g: np.ndarray) -> np.ndarray:
    """Multiply by a per-pixel (H, W) gain."""
    f = image.astype(np.float32)
    f *= g[..., None] if image.ndim == 3 else g
    return _to_u8(f)


@functools.lru_cache(maxsize=16)
def _axes(h: int, w: int) -> tuple[np.ndarray, np.ndarray]:
    """float32 (1, W) and (H, 1) pixel coordinates, cached per size: broadcasting them instead of a
    full ``mgrid`` gives the same float32 values at a fraction of the work (effects run ~10 times
    per sample on the same few sizes)."""
    xs, ys = np.arange(w, dtype=np.float32)[None, :], np.arange(h, dtype=np.float32)[:, None]
    xs.flags.writeable = ys.flags.writeable = False
    return xs, ys


def _radius(h: int, w: int, cx: float = 0.0, cy: float = 0.0) -> np.ndarray:
    """Distance from the (offset) centre normalised by the half diagonal (corners ~ 1)."""
    xs, ys = _axes(h, w)
    r = np.hypot(xs - (w - 1) / 2 - cx * w, ys - (h - 1) / 2 - cy * h)
    r /= math.hypot(w / 2, h / 2)
    return r


# --------------------------------------------------------------------------- lens distortion
@dataclass(frozen=True)
class LensDistortionParams(_Params):
    """Residual radial distortion on top of the calibrated lens: what its calibration got wrong.

    The draw is calibration-sized: on a 320 x 240 eye camera |k1| <= 0.02 moves a pixel at half
    the radius (where the eye is) by at most 0.5 px and a corner by 4 px. Builds before 2026-12
    drew k1 up to 0.2 (5 px at half the radius, more than the generic headset's whole calibrated
    distortion): a lens that far off is a wrong calibration file, not a residual, and it was the
    effect that cost the aligners most gaze (+1.5 deg median, ``benchmarks/align_gaze_floor.py``).

    Attributes:
        k1: r^2 coefficient on the half-diagonal-normalised radius; > 0 barrel, < 0 pincushion.
        k2: r^4 coefficient.
    """

    k1: float = 0.02
    k2: float = 0.0
    LIMITS: ClassVar = {"k1": (-0.5, 0.5), "k2": (-0.3, 0.3)}
    DRAW: ClassVar = {"k1": (-0.02, 0.02), "k2": (-0.005, 0.005)}


def lens_distortion(image: np.ndarray, rng: np.random.Generator, **params: Any) -> np.ndarray:
    """Output pixel at radius r shows the input at ``r (1 + k1 r^2 + k2 r^4)`` (barrel if k1 > 0)."""
    _check_image(image)
    p = _params(LensDistortionParams, params)
    h, w = image.shape[:2]
    xs, ys = _axes(h, w)
    cx, cy, half = (w - 1) / 2, (h - 1) / 2, math.hypot(w / 2, h / 2)
    dx, dy = (xs - cx) / half, (ys - cy) / half
    r2 = dx * dx + dy * dy
    f = 1.0 + p.k1 * r2 + p.k2 * r2 * r2
    return cv2.remap(
        image, cx + dx * f * half, cy + dy * f * half, cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE
    )


# --------------------------------------------------------------------------- IR look
@dataclass(frozen=True)
class IRLookParams(_Params):
    """Near-infrared camera look.

    Attributes:
        red_weight: share of the red channel in the IR luminance (skin reflects NIR like red, so it
            comes out brighter than in a visible-light gray conversion).
        saturation: colour kept for BGR images (0 = fully gray).
        brightness: overall gain (IR illuminators are bright at eye distance).
        contrast: S-curve exponent (> 1 more contrast, < 1 flatter).
    """

    red_weight: float = 0.6
    saturation: float = 0.0
    brightness: float = 1.0
    contrast: float = 1.2
    LIMITS: ClassVar = {"red_weight": (0.0, 1.0), "saturation": (0.0, 1.0),
                        "brightness": (0.2, 3.0), "contrast": (0.25, 4.0)}
    DRAW: ClassVar = {"red_weight": (0.4, 0.8), "saturation": (0.0, 0.15),
                      "brightness": (0.85, 1.2), "contrast": (0.9, 1.4)}


def ir_look(image: np.ndarray, rng: np.random.Generator, **params: Any) -> np.ndarray:
    """Red-weighted luminance, desaturated, brightened, through a symmetric contrast S-curve."""
    _check_image(image)
    p = _params(IRLookParams, params)
    f = image.astype(np.float32) / 255.0
    if image.ndim == 3:
        b, g, r = f[..., 0], f[..., 1], f[..., 2]
        lum = p.red_weight * r + (1.0 - p.red_weight) * (0.7 * g + 0.3 * b)
    else:
        lum = f
    x = np.clip(lum * p.brightness, 0.0, 1.0)
    xc = x**p.contrast
    lum = xc / np.maximum(xc + (1.0 - x) ** p.contrast, 1e-6)
    if image.ndim == 3:
        out = lum[..., None] * (1.0 - p.saturation) + f * p.saturation
    else:
        out = lum
    return _to_u8(out * 255.0)


# --------------------------------------------------------------------------- vignetting
@dataclass(frozen=True)
class VignetteParams(_Params):
    """Radial fall-off of the lens.

    Attributes:
        strength: darkening at the corners (0 none, 1 black).
        radius: normalised radius where the fall-off starts (corners = 1).
        power: shape of the fall-off beyond ``radius``.
        cx, cy: centre offset in fractions of width / height.
    """

    strength: float = 0.5
    radius: float = 0.4
    power: float = 2.0
    cx: float = 0.0
    cy: float = 0.0
    LIMITS: ClassVar = {"strength": (0.0, 1.0), "radius": (0.0, 0.95), "power": (0.5, 6.0),
                        "cx": (-0.5, 0.5), "cy": (-0.5, 0.5)}
    DRAW: ClassVar = {"strength": (0.2, 0.7), "radius": (0.2, 0.6), "power": (1.5, 3.0),
                      "cx": (-0.1, 0.1), "cy": (-0.1, 0.1)}


def vignetting(image: np.ndarray, rng: np.random.Generator, **params: Any) -> np.ndarray:
    """Gain ``1 - strength * ((r - radius) / (1 - radius))^power`` beyond ``radius``."""
    _check_image(image)
    p = _params(VignetteParams, params)
    h, w = image.shape[:2]
    t = np.clip((_radius(h, w, p.cx, p.cy) - p.radius) / (1.0 - p.radius), 0.0, 1.0)
    return _gain(image, 1.0 - p.strength * t**p.power)


# --------------------------------------------------------------------------- blur
@dataclass(frozen=True)
class BlurParams(_Params):
    """Defocus (disk) or motion (line) blur.

    Attributes:
        kind: "defocus" or "motion".
        radius: disk radius / half the motion length, px.
        angle: motion direction, degrees (0 = along image x).
    """

    kind: str = "defocus"
    radius: float = 2.0
    angle: float = 0.0
    LIMITS: ClassVar = {"radius": (0.0, 25.0), "angle": (0.0, 180.0)}
    DRAW: ClassVar = {"radius": (0.5, 3.0), "angle": (0.0, 180.0)}

    def __post_init__(self) -> None:
        if self.kind not in BLUR_KINDS:
            msg = f"BlurParams.kind must be one of {', '.join(BLUR_KINDS)}, got {self.kind!r}"
            raise ValueError(msg)
        super().__post_init__()

    @classmethod
    def draw(cls, rng: np.random.Generator) -> BlurParams:
        """Random kind, radius and angle."""
        kind = BLUR_KINDS[int(rng.integers(len(BLUR_KINDS)))]
        return cls(kind=kind, radius=float(rng.uniform(*cls.DRAW["radius"])),
                   angle=float(rng.uniform(0.0, 180.0)))


def _blur_kernel(p: BlurParams) -> np.ndarray:
    n = 2 * math.ceil(p.radius) + 1
    k = np.zeros((4 * n, 4 * n), np.float32)  # drawn 4x supersampled, then reduced
    c = (4 * n - 1) / 2
    if p.kind == "defocus":
        cv2.circle(k, (round(c * 16), round(c * 16)), max(round(p.radius * 4 * 16), 1), 1.0, -1,
                   cv2.LINE_AA, 4)
    else:
        a = math.radians(p.angle)
        d = p.radius * 4
        p0 = (round((c - d * math.cos(a)) * 16), round((c - d * math.sin(a)) * 16))
        p1 = (round((c + d * math.cos(a)) * 16), round((c + d * math.sin(a)) * 16))
        cv2.line(k, p0, p1, 1.0, 4, cv2.LINE_AA, 4)
    k = cv2.resize(k, (n, n), interpolation=cv2.INTER_AREA)
    return k / max(float(k.sum()), 1e-9)


def blur(image: np.ndarray, rng: np.random.Generator, **params: Any) -> np.ndarray:
    """Convolve with a normalised disk (defocus) or line (motion) kernel."""
    _check_image(image)
    p = _params(BlurParams, params)
    if p.radius < 0.25:
        return image.copy()
    return cv2.filter2D(image, -1, _blur_kernel(p), borderType=cv2.BORDER_REFLECT)


# --------------------------------------------------------------------------- sensor noise
@dataclass(frozen=True)
class NoiseParams(_Params):
    """Shot plus read noise of a small sensor.

    Attributes:
        full_well: electrons at white (lower = stronger shot noise, sigma = sqrt(I * 255 / full_well) DN).
        read_sigma: read noise, DN (8-bit digital numbers).
    """

    full_well: float = 1000.0
    read_sigma: float = 2.0
    LIMITS: ClassVar = {"full_well": (10.0, 1e6), "read_sigma": (0.0, 50.0)}
    DRAW: ClassVar = {"full_well": (300.0, 5000.0), "read_sigma": (0.5, 4.0)}


def sensor_noise(image: np.ndarray, rng: np.random.Generator, **params: Any) -> np.ndarray:
    """Gaussian approximation of Poisson shot noise plus Gaussian read noise, per pixel and channel."""
    _check_image(image)
    p = _params(NoiseParams, params)
    sigma = np.sqrt(np.arange(256, dtype=np.float32) * (255.0 / p.full_well) + p.read_sigma**2)[image]
    sigma *= rng.standard_normal(image.shape, dtype=np.float32)
    sigma += image
    return _to_u8(sigma)


# --------------------------------------------------------------------------- lighting
@dataclass(frozen=True)
class LightingParams(_Params):
    """Exposure and illumination changes.

    Attributes:
        gain: exposure gain.
        gamma: tone exponent (> 1 darker mid-tones).
        gradient: relative brightness change across the image along ``angle`` (+-).
        angle: gradient direction, degrees (0 = brighter toward image +x).
    """

    gain: float = 1.0
    gamma: float = 1.0
    gradient: float = 0.0
    angle: float = 0.0
    LIMITS: ClassVar = {"gain": (0.05, 5.0), "gamma": (0.2, 5.0),
                        "gradient": (-1.0, 1.0), "angle": (0.0, 360.0)}
    DRAW: ClassVar = {"gain": (0.6, 1.4), "gamma": (0.7, 1.4), "gradient": (-0.4, 0.4), "angle": (0.0, 360.0)}


def lighting(image: np.ndarray, rng: np.random.Generator, **params: Any) -> np.ndarray:
    """``255 * gain * (I / 255)^gamma * (1 + gradient * ramp)``, ramp in [-1, 1] along ``angle``."""
    _check_image(image)
    p = _params(LightingParams, params)
    h, w = image.shape[:2]
    xs, ys = _axes(h, w)
    a = math.radians(p.angle)
    ramp = ((xs / max(w - 1, 1) - 0.5) * math.cos(a) + (ys / max(h - 1, 1) - 0.5) * math.sin(a)) * 2.0
    ramp /= max(abs(math.cos(a)) + abs(math.sin(a)), 1e-6)
    # the tone curve of a uint8 pixel depends on its value only: one 256-entry table
    lut = 255.0 * (np.arange(256, dtype=np.float32) / 255.0) ** p.gamma
    g = p.gain * np.clip(1.0 + p.gradient * ramp, 0.0, None)
    tone = lut[image]
    tone *= g[..., None] if image.ndim == 3 else g
    return _to_u8(tone)


# --------------------------------------------------------------------------- headset frame mask
@dataclass(frozen=True)
class HeadsetMaskParams(_Params):
    """The headset's own housing cutting into the field of view.

    Attributes:
        margin: inset of the rounded opening from the image border, fraction of the short side.
        corner_radius: corner radius of the opening, fraction of the short side.
        softness: edge blur, px.
        level: gray level of the housing (dark).
    """

    margin: float = 0.04
    corner_radius: float = 0.3
    softness: float = 6.0
    level: float = 8.0
    LIMITS: ClassVar = {"margin": (0.0, 0.4), "corner_radius": (0.0, 0.5),
                        "softness": (0.0, 100.0), "level": (0.0, 255.0)}
    DRAW: ClassVar = {"margin": (0.0, 0.08), "corner_radius": (0.15, 0.5),
                      "softness": (2.0, 12.0), "level": (0.0, 20.0)}


def headset_mask(image: np.ndarray, rng: np.random.Generator, **params: Any) -> np.ndarray:
    """Blend toward ``level`` outside a soft rounded-rectangle opening (signed-distance based)."""
    _check_image(image)
    p = _params(HeadsetMaskParams, params)
    h, w = image.shape[:2]
    short = min(h, w)
    m, rad = p.margin * short, p.corner_radius * short
    xs, ys = _axes(h, w)  # broadcast (1, W) and (H, 1): same values as a full grid
    hx, hy = (w - 1) / 2 - m, (h - 1) / 2 - m
    qx = np.abs(xs - (w - 1) / 2) - (hx - rad)
    qy = np.abs(ys - (h - 1) / 2) - (hy - rad)
    outside = np.hypot(np.maximum(qx, 0), np.maximum(qy, 0)) + np.minimum(np.maximum(qx, qy), 0) - rad
    alpha = np.clip(0.5 - outside / max(p.softness, 1e-3), 0.0, 1.0)  # 1 inside the opening
    a = alpha[..., None] if image.ndim == 3 else alpha
    return _to_u8(image.astype(np.float32) * a + p.level * (1.0 - a))


# --------------------------------------------------------------------------- occlusions
@dataclass(frozen=True)
class OcclusionParams(_Params):
    """Dark blobs (eyelashes, cable, housing parts) and a lens smudge.

    Attributes:
        n_blobs: number of dark elliptical blobs.
        size: blob semi-axis, fraction of the short side.
        darkness: how dark blobs get (0 none, 1 black).
        smudge: strength of one hazy blurred patch (0 none).
    """

    n_blobs: int = 2
    size: float = 0.12
    darkness: float = 0.7
    smudge: float = 0.0
    LIMITS: ClassVar = {"n_blobs": (0, 8), "size": (0.01, 0.5), "darkness": (0.0, 1.0), "smudge": (0.0, 1.0)}
    DRAW: ClassVar = {"n_blobs": (1, 3), "size": (0.05, 0.2), "darkness": (0.4, 0.9), "smudge": (0.0, 0.6)}
    INTS: ClassVar = ("n_blobs",)

    def __post_init__(self) -> None:
        if not isinstance(self.n_blobs, (int, np.integer)) or isinstance(self.n_blobs, bool):
            msg = f"OcclusionParams.n_blobs must be an integer, got {self.n_blobs!r}"
            raise ValueError(msg)
        super().__post_init__()


def _gauss_reach(sigma: float) -> int:
    """Half-width (+1) of the kernel of ``cv2.GaussianBlur(float32, (0, 0), sigma)``, sized
    ``round(8 sigma + 1) | 1``: a window blurred this far past the pixels needed gives them
    exactly the full-image values."""
    return (round(sigma * 8.0 + 1.0) | 1) // 2 + 1


def _soft_ellipse(h: int, w: int, rng: np.random.Generator, size: float) -> tuple[tuple[slice, slice], np.ndarray]:
    """A blurred anti-aliased ellipse mask as (window, values); the mask is 0 outside the window.

    Only the window is blurred (full-image blurs were the slowest part of the effects); it reaches
    two kernel half-widths past the blob, so the reflected border taps read zeros as in a
    full-image blur and the values are exactly the full-image values.
    """
    short = min(h, w)
    cx, cy = rng.uniform(0, w), rng.uniform(0, h)
    ax = size * short * rng.uniform(0.6, 1.4)
    ay = size * short * rng.uniform(0.6, 1.4)
    centre, axes = (round(cx), round(cy)), (max(round(ax), 1), max(round(ay), 1))
    m = np.zeros((h, w), np.float32)
    cv2.ellipse(m, centre, axes, float(rng.uniform(0, 180)), 0, 360, 1.0, -1, cv2.LINE_AA)
    sigma = max(0.25 * min(ax, ay), 0.5)
    reach = _gauss_reach(sigma)
    r = max(axes) + 2 + 2 * reach
    win = (slice(max(centre[1] - r, 0), min(centre[1] + r + 1, h)),
           slice(max(centre[0] - r, 0), min(centre[0] + r + 1, w)))
    return win, cv2.GaussianBlur(m[win], (0, 0), sigma)


#: the haze under a smudge: this share of the blurred frame plus a lift (a fifth of the way to 200)
_HAZE_KEEP: Final = 0.8
_HAZE_LIFT: Final = 0.2 * 200.0


@dataclass(frozen=True)
class OcclusionFields:
    """One occlusion draw as fields: ``out = gain * ((1 - smudge) f + smudge haze(f))``.

    Kept apart from the frame so that a trainer can know, exactly, what it has to undo (the
    de-occluder's field targets, :mod:`revavatar.learning.deocclusion`).

    Attributes:
        gain: (H, W) float32, the blobs' product (1 where there is none).
        smudge: (H, W) float32 blend weight toward the haze (0 outside ``window``), or None.
        window: the rows and columns where ``smudge`` is non-zero, or None.
        sigma: the haze's Gaussian blur (pixels).
    """

    gain: np.ndarray
    smudge: np.ndarray | None
    window: tuple[slice, slice] | None
    sigma: float

    def haze(self, frame: np.ndarray) -> np.ndarray:
        """What the smudge blends ``frame`` (float, (H, W) or (H, W, 3)) toward, everywhere."""
        return cv2.GaussianBlur(frame, (0, 0), self.sigma) * _HAZE_KEEP + _HAZE_LIFT


def occlusion_fields(shape: tuple[int, ...], rng: np.random.Generator, **params: Any) -> OcclusionFields:
    """The fields of the occlusion :func:`occlusion` would draw from ``rng`` for an image of ``shape``."""
    p = _params(OcclusionParams, params)
    h, w = shape[:2]
    gain = np.ones((h, w), np.float32)
    for _ in range(int(p.n_blobs)):
        win, blob = _soft_ellipse(h, w, rng, p.size)
        gain[win] *= 1.0 - p.darkness * blob
    sigma = 0.02 * min(h, w) + 1.0
    if p.smudge <= 0:
        return OcclusionFields(gain, None, None, sigma)
    window, s = _soft_ellipse(h, w, rng, 2.0 * p.size)
    smudge = np.zeros((h, w), np.float32)
    smudge[window] = s * p.smudge
    return OcclusionFields(gain, smudge, window, sigma)


def occlusion(image: np.ndarray, rng: np.random.Generator, **params: Any) -> np.ndarray:
    """Darken random soft blobs and haze one smudged patch; positions come from ``rng``."""
    _check_image(image)
    return apply_occlusion(image, occlusion_fields(image.shape, rng, **params))


def apply_occlusion(image: np.ndarray, occ: OcclusionFields) -> np.ndarray:
    """``image`` under an occlusion already drawn (:func:`occlusion_fields`): a caller that
    needs the fields as well draws them once."""
    _check_image(image)
    h, w = image.shape[:2]
    f = image.astype(np.float32)
    if occ.window is not None and occ.smudge is not None:
        ys, xs = occ.window
        r = _gauss_reach(occ.sigma)  # the haze is only needed under the smudge: blur that window
        pad = (slice(max(ys.start - r, 0), min(ys.stop + r, h)),
               slice(max(xs.start - r, 0), min(xs.stop + r, w)))
        inner = (slice(ys.start - pad[0].start, ys.stop - pad[0].start),
                 slice(xs.start - pad[1].start, xs.stop - pad[1].start))
        hazy = occ.haze(f[pad])[inner]
        s = occ.smudge[occ.window]
        s3 = s[..., None] if image.ndim == 3 else s
        f[ys, xs] = f[ys, xs] * (1.0 - s3) + hazy * s3
    f *= occ.gain[..., None] if image.ndim == 3 else occ.gain
    return _to_u8(f)


# --------------------------------------------------------------------------- eyebrow reduction
@dataclass(frozen=True)
class EyebrowParams(_Params):
    """Attenuation of the eyebrow band above the eye in eye-camera views.

    Headset eye cameras look up from below, and the brow is either hidden by the housing or lit
    poorly; the band makes the model rely on the eye rather than on brow texture.

    Attributes:
        y0, y1: the band in fractions of image height (see :func:`eyebrow_band`).
        strength: contrast reduction inside the band (0 none, 1 flat).
        darken: extra darkening inside the band (0 none, 1 black).
        feather: soft edge width, fraction of image height.
    """

    y0: float = 0.0
    y1: float = 0.3
    strength: float = 0.7
    darken: float = 0.2
    feather: float = 0.05
    LIMITS: ClassVar = {"y0": (0.0, 1.0), "y1": (0.0, 1.0), "strength": (0.0, 1.0),
                        "darken": (0.0, 1.0), "feather": (0.0, 0.5)}
    DRAW: ClassVar = {"y0": (0.0, 0.1), "y1": (0.2, 0.4), "strength": (0.4, 0.9),
                      "darken": (0.0, 0.4), "feather": (0.02, 0.1)}

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.y1 <= self.y0:
            msg = f"EyebrowParams needs y0 < y1, got y0={self.y0}, y1={self.y1}"
            raise ValueError(msg)


def eyebrow_reduction(image: np.ndarray, rng: np.random.Generator, **params: Any) -> np.ndarray:
    """Inside the feathered band, pull pixels toward their local mean and darken them."""
    _check_image(image)
    p = _params(EyebrowParams, params)
    h, w = image.shape[:2]
    y = (np.arange(h, dtype=np.float32) + 0.5) / h
    fe = max(p.feather, 1e-3)
    band = np.clip((y - p.y0) / fe + 0.5, 0, 1) * np.clip((p.y1 - y) / fe + 0.5, 0, 1)
    rows, out = np.nonzero(band > 0)[0], image.copy()  # rows outside the band stay as they are
    if not len(rows):
        return out
    r0, r1, sigma = int(rows[0]), int(rows[-1]) + 1, 0.06 * min(h, w) + 1.0
    p0, p1 = max(r0 - _gauss_reach(sigma), 0), min(r1 + _gauss_reach(sigma), h)  # band + reach
    f = image[p0:p1].astype(np.float32)
    local, f = cv2.GaussianBlur(f, (0, 0), sigma)[r0 - p0:r1 - p0], f[r0 - p0:r1 - p0]
    reduced = (local + (f - local) * (1.0 - p.strength)) * (1.0 - p.darken)
    a = band[r0:r1, None, None] if image.ndim == 3 else band[r0:r1, None]
    out[r0:r1] = _to_u8(f * (1.0 - a) + reduced * a)
    return out


def eyebrow_band(
    camera: CameraCalibration, layout: CanonicalLayout, region: str, brow_z_mm: float = -5.0
) -> tuple[float, float] | None:
    """Where the eyebrows of canonical ``region`` appear in ``camera``: (y0, y1) image fractions.

    Projects the brow band (canonical y 0.25-0.36 of the face, across the region's width, at depth
    ``brow_z_mm``) through the calibrated camera. None if the brows are not in view.
    """
    x0, _, x1, _ = layout.region(region).box_px
    s = layout.size
    xs, ys = np.meshgrid(np.linspace(x0, x1, 9), np.linspace(_BROW_Y[0] * s, _BROW_Y[1] * s, 5))
    pts = layout.pixel_to_head(np.stack([xs.ravel(), ys.ravel()], 1), brow_z_mm)
    uv, depth = camera.project(pts)
    w, h = camera.resolution
    ok = (depth > 0) & (uv[:, 0] >= 0) & (uv[:, 0] < w)
    if not ok.any():
        return None
    y0, y1 = float(np.clip(uv[ok, 1].min() / h, 0, 1)), float(np.clip(uv[ok, 1].max() / h, 0, 1))
    return (y0, y1) if y1 > y0 else None


# --------------------------------------------------------------------------- registry
Effect = Callable[..., np.ndarray]
#: effect name -> (function, params class); the order here is the default application order
EFFECTS: Final[dict[str, tuple[Effect, type[_Params]]]] = {
    "lens_distortion": (lens_distortion, LensDistortionParams),
    "ir_look": (ir_look, IRLookParams),
    "lighting": (lighting, LightingParams),
    "eyebrow_reduction": (eyebrow_reduction, EyebrowParams),
    "occlusion": (occlusion, OcclusionParams),
    "blur": (blur, BlurParams),
    "vignetting": (vignetting, VignetteParams),
    "headset_mask": (headset_mask, HeadsetMaskParams),
    "sensor_noise": (sensor_noise, NoiseParams),
}


def apply_effects(image: np.ndarray, names: Sequence[str], rng: np.random.Generator,
                  params: Mapping[str, _Params | Mapping[str, Any]] | None = None,
                  ) -> tuple[np.ndarray, list[dict[str, Any]]]:
    """Apply the named effects in order; parameters not given are drawn from ``rng``.

    Args:
        image: uint8 gray or BGR image.
        names: effect names (keys of :data:`EFFECTS`), applied in this order.
        rng: the generator every draw comes from (parameters and one seed per effect).
        params: optional fixed parameters per effect name (a params instance or a mapping).

    Returns:
        The result and one record per effect: ``{"effect": name, "seed": int, "params": {...}}``;
        ``EFFECTS[name][0](image, np.random.default_rng(seed), **params)`` replays it exactly.

    Raises:
        ValueError: unknown effect name, params for an effect not in ``names``, or bad values.
    """
    _check_image(image)
    fixed = dict(params or {})
    for name in [*names, *fixed]:
        if name not in EFFECTS:
            msg = f"unknown effect {name!r}; expected one of {', '.join(EFFECTS)}"
            raise ValueError(msg)
    extra = sorted(set(fixed) - set(names))
    if extra:
        msg = f"params given for effects not applied: {', '.join(extra)}; applied: {', '.join(names)}"
        raise ValueError(msg)
    applied: list[dict[str, Any]] = []
    out = image
    for name in names:
        fn, cls = EFFECTS[name]
        given = fixed.get(name)
        if given is None:
            p = cls.draw(rng)
        elif isinstance(given, cls):
            p = given
        else:
            p = _params(cls, given)  # type: ignore[arg-type]
        seed = int(rng.integers(0, 2**63 - 1))
        values = {f.name: getattr(p, f.name) for f in fields(p)}
        out = fn(out, np.random.default_rng(seed), **values)
        applied.append({"effect": name, "seed": seed, "params": dataclasses.asdict(p)})
    return out, applied
