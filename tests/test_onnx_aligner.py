"""The ONNX aligner: rectify + network under onnxruntime, no torch at run time, registry."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest

from revavatar.core.alignment import HomographyAligner
from revavatar.core.calibration import load_calibration
from revavatar.core.canonical import CanonicalLayout
from revavatar.core.onnx_aligner import OnnxAligner, default_model_dir
from revavatar.errors import ModelLoadError

ROOT = Path(__file__).resolve().parents[1]
HEADSET = ROOT / "calibration" / "generic.yaml"
LAYOUT = CanonicalLayout(128)  # left_eye crop 64 x 48: a tiny model


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory):
    import torch

    from revavatar.learning.alignment_model import AlignModelConfig, AlignmentModel, export_aligner

    torch.manual_seed(0)
    cfg = AlignModelConfig(region="left_eye", crop_size=(64, 48), ngf=8, n_blocks=1, max_ch=16,
                           ndf=8, input_mode="rectified", bf16=False)
    model = AlignmentModel(cfg)
    with torch.no_grad():  # make the residual generator do something visible
        model.G.model[-2].weight.normal_(0, 0.05)
    out = tmp_path_factory.mktemp("models") / "align_left_eye"
    return export_aligner(model, out, {"steps": 0, "command": "test"})


@pytest.fixture(scope="module")
def frame():
    rng = np.random.default_rng(0)
    img = cv2.GaussianBlur(rng.integers(0, 256, (240, 320), dtype=np.uint8), (7, 7), 2)
    return img


def test_align_matches_torch_on_rectified_input(model_dir, frame):
    from revavatar.learning.alignment_model import load_generator
    from revavatar.learning.data import to_image, to_tensor

    cam = load_calibration(HEADSET).cameras["left_eye"]
    aligner = OnnxAligner("left_eye", model_dir, cam, LAYOUT)
    assert aligner.method == "cyclegan" and aligner.channels == 1
    crop = aligner.align(frame)
    assert crop.shape == (48, 64) and crop.dtype == np.uint8
    rect = HomographyAligner(cam, LAYOUT.region("left_eye"), LAYOUT).align(frame)
    g, _ = load_generator(model_dir)
    ref = to_image(g(to_tensor(rect)[None]).detach())
    assert np.abs(crop.astype(int) - ref.astype(int)).max() <= 1
    assert not np.array_equal(crop, rect)  # the network changed the rectified crop
    colour = aligner.align(cv2.cvtColor(frame, cv2.COLOR_GRAY2BGR))  # converted to gray first
    assert np.abs(colour.astype(int) - crop.astype(int)).max() <= 1


def test_errors(model_dir, tmp_path):
    cam = load_calibration(HEADSET).cameras["left_eye"]
    with pytest.raises(ModelLoadError, match="card.json"):
        OnnxAligner("left_eye", tmp_path, cam, LAYOUT)
    with pytest.raises(ModelLoadError, match="not right_eye"):
        OnnxAligner("right_eye", model_dir, cam, LAYOUT)
    with pytest.raises(ValueError, match="camera calibration"):
        OnnxAligner("left_eye", model_dir, None, LAYOUT)
    with pytest.raises(ModelLoadError, match="layout"):
        OnnxAligner("left_eye", model_dir, cam, CanonicalLayout(256))
    with pytest.raises(ValueError, match="cyclegan, autoencoder"):
        default_model_dir("gan", "left_eye")
    card = json.loads((model_dir / "card.json").read_text())
    assert card["config"]["input_mode"] == "rectified"


def test_no_torch_at_run_time_and_registry(model_dir, frame, tmp_path):
    np.save(tmp_path / "frame.npy", frame)
    code = f"""
import sys, numpy as np
from revavatar.core.calibration import load_calibration
from revavatar.core.canonical import CanonicalLayout
from revavatar.graph.stages import ALIGNERS
layout = CanonicalLayout(128)
cam = load_calibration({str(HEADSET)!r}).cameras["left_eye"]
aligner = ALIGNERS["cyclegan"](cam, layout.region("left_eye"), layout)
crop = aligner.align(np.load({str(tmp_path / 'frame.npy')!r}))
assert crop.shape == (48, 64), crop.shape
assert aligner.method == "cyclegan"
assert "torch" not in sys.modules, "torch was imported"
print("ok")
"""
    env = {**os.environ, "REVAVATAR_MODELS": str(model_dir.parent)}
    res = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True,
                         timeout=120)
    assert res.returncode == 0, res.stderr[-2000:]
    assert res.stdout.strip().endswith("ok")


def test_surface_input_model_needs_the_enrolled_face(model_dir, frame, tmp_path, monkeypatch):
    """A model trained on ``surface`` input rectifies onto the given face depth, and the graph's
    factory refuses to run it without one instead of silently feeding it the plane."""
    import shutil

    from revavatar.core.alignment import SurfaceAligner
    from revavatar.core.onnx_aligner import aligner_factory
    from revavatar.errors import InputError

    surf_dir = tmp_path / "models" / "align_left_eye"
    shutil.copytree(model_dir, surf_dir)
    card = json.loads((surf_dir / "card.json").read_text())
    card["config"]["input_mode"] = "surface"
    (surf_dir / "card.json").write_text(json.dumps(card))
    cam = load_calibration(HEADSET).cameras["left_eye"]
    yy, _ = np.mgrid[0:128, 0:128]
    depth = (0.2 * (yy - 64)).astype(np.float32)  # a face tilted about x, in mm
    aligner = OnnxAligner("left_eye", surf_dir, cam, LAYOUT, surface_depth=depth)
    assert isinstance(aligner.rectifier, SurfaceAligner)
    want = SurfaceAligner(cam, LAYOUT.region("left_eye"), LAYOUT, depth).align(frame)
    np.testing.assert_array_equal(aligner.prepare(frame)[0], want)
    plain = OnnxAligner("left_eye", model_dir, cam, LAYOUT)
    assert not np.array_equal(aligner.align(frame), plain.align(frame))
    monkeypatch.setenv("REVAVATAR_MODELS", str(surf_dir.parent))
    make = aligner_factory("cyclegan")
    with pytest.raises(InputError, match="profile"):
        make(cam, LAYOUT.region("left_eye"), LAYOUT)
    crop = make(cam, LAYOUT.region("left_eye"), LAYOUT, surface_depth=depth).align(frame)
    assert crop.shape == (48, 64)


def test_reference_model_reads_the_enrolled_dp(tmp_path, frame, monkeypatch):
    """A model conditioned on the wearer gets the DP crop as its second input, the view's unseen
    pixels filled from it; without an enrollment it refuses to run instead of guessing."""
    import torch

    from revavatar.core.alignment import enrollment_input
    from revavatar.core.onnx_aligner import aligner_factory
    from revavatar.errors import InputError
    from revavatar.learning.alignment_model import AlignModelConfig, AlignmentModel, export_aligner
    from revavatar.learning.data import to_image, to_tensor

    torch.manual_seed(0)
    cfg = AlignModelConfig(region="left_eye", crop_size=(64, 48), ngf=8, n_blocks=1, max_ch=16,
                           ndf=8, input_mode="rectified", bf16=False, reference=True)
    model = AlignmentModel(cfg)
    with torch.no_grad():
        model.G.model[-2].weight.normal_(0, 0.05)
    d = export_aligner(model, tmp_path / "models" / "align_left_eye", {"steps": 0})
    cam = load_calibration(HEADSET).cameras["left_eye"]
    rng = np.random.default_rng(1)
    dp = cv2.GaussianBlur(rng.integers(0, 256, (128, 128, 3), dtype=np.uint8), (5, 5), 1)
    aligner = OnnxAligner("left_eye", d, cam, LAYOUT)
    assert aligner.reference
    with pytest.raises(InputError, match="profile"):
        aligner.align(frame)
    with pytest.raises(ValueError, match="aligned face"):
        aligner.set_enrollment(dp[:64])
    aligner.set_enrollment(dp)
    rect = HomographyAligner(cam, LAYOUT.region("left_eye"), LAYOUT)
    view, ref = enrollment_input(rect.align(frame), rect.valid_mask, dp, LAYOUT, "left_eye")
    with torch.no_grad():
        want = to_image(model(to_tensor(view)[None], to_tensor(ref)[None]))
    assert np.abs(aligner.align(frame).astype(int) - want).max() <= 1
    monkeypatch.setenv("REVAVATAR_MODELS", str(d.parent))
    make = aligner_factory("cyclegan")
    with pytest.raises(InputError, match="profile"):
        make(cam, LAYOUT.region("left_eye"), LAYOUT)
    assert make(cam, LAYOUT.region("left_eye"), LAYOUT, dp=dp).align(frame).shape == (48, 64)


@pytest.mark.parametrize("tone", ["enrollment", "enrollment-skin"])
def test_reference_model_reads_its_view_in_the_tone_it_was_trained_on(tmp_path, frame, tone):
    """A model trained on views in the enrollment's tone gets them so at run time too."""
    import torch

    from revavatar.core.alignment import enrollment_input, toned_view
    from revavatar.learning.alignment_model import AlignModelConfig, AlignmentModel, export_aligner

    torch.manual_seed(0)
    cfg = AlignModelConfig(region="left_eye", crop_size=(64, 48), ngf=8, n_blocks=1, max_ch=16,
                           ndf=8, input_mode="rectified", bf16=False, reference=True,
                           view_tone=tone)
    d = export_aligner(AlignmentModel(cfg), tmp_path / "align_left_eye", {"steps": 0})
    cam = load_calibration(HEADSET).cameras["left_eye"]
    ramp = np.linspace(150, 250, 128)[None, :, None]  # a bright ramp, far from the frame's tone
    dp = np.broadcast_to(ramp, (128, 128, 3)).astype(np.uint8)
    aligner = OnnxAligner("left_eye", d, cam, LAYOUT, dp=dp)
    assert aligner.view_tone == tone
    view, ref = aligner.prepare(frame)
    rect = HomographyAligner(cam, LAYOUT.region("left_eye"), LAYOUT)
    camera_view, want_ref = enrollment_input(rect.align(frame), rect.valid_mask, dp, LAYOUT,
                                             "left_eye")
    assert np.array_equal(ref, want_ref)
    eye = LAYOUT.eye_weight("left_eye")
    assert np.array_equal(view, toned_view(camera_view, ref, tone, eye))
    assert abs(float(camera_view.mean()) - float(ref.mean())) > 20.0
    assert abs(float(view.mean()) - float(ref.mean())) < 10.0  # the DP's tone, not the camera's
    assert "enrollment crop's tone" in (d / "README.md").read_text()


def test_camera_eye_takes_the_opening_from_the_rectified_view(model_dir, frame):
    """eye_from="camera": the network's crop around the eye, the rectified camera's eye inside
    it in the network's tone; refused where there is no eye or no rectified view."""
    from revavatar.core.alignment import camera_eye
    from revavatar.core.composite import match_histogram

    cam = load_calibration(HEADSET).cameras["left_eye"]
    network = OnnxAligner("left_eye", model_dir, cam, LAYOUT)
    hybrid = OnnxAligner("left_eye", model_dir, cam, LAYOUT, eye_from="camera")
    net, got = network.align(frame), hybrid.align(frame)
    rect = HomographyAligner(cam, LAYOUT.region("left_eye"), LAYOUT).align(frame)
    eye = LAYOUT.eye_weight("left_eye")
    assert np.array_equal(got[eye == 0], net[eye == 0])  # around the eye: the network's
    inside = eye == 1
    want = match_histogram(rect, net, eye > 0.5)[inside]
    assert np.array_equal(got[inside], want)  # the camera's eye in the network's tone
    assert not np.array_equal(got[inside], net[inside])
    assert np.array_equal(got, camera_eye(net, rect, eye))
    with pytest.raises(ValueError, match="eye_from"):
        OnnxAligner("left_eye", model_dir, cam, LAYOUT, eye_from="dp")


def test_camera_eye_keeps_the_aligned_tone_and_the_camera_shapes():
    from revavatar.core.alignment import camera_eye

    eye = LAYOUT.eye_weight("left_eye")
    aligned = np.full(eye.shape, 120, np.uint8)
    aligned[20:28, 20:28] = 40  # the network's iris
    rect = np.full(eye.shape, 200, np.uint8)  # a brighter exposure ...
    rect[20:28, 34:42] = 150  # ... and the iris somewhere else
    out = camera_eye(aligned, rect, eye)
    assert out[24, 38] < 60 and out[24, 24] > 100  # the camera's iris, dark as the network's
    assert abs(int(out[24, 30]) - 120) <= 2  # the camera's skin at the network's gray
