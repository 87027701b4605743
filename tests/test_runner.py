"""GraphRunner: wiring, keep-last drops, lossless rate 0, errors, taps; real stages end to end."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import pytest

from revavatar.core.messages import Header, Image, Time, array_to_image
from revavatar.errors import InputError
from revavatar.graph.description import headset_graph
from revavatar.graph.runner import GraphRunner
from revavatar.graph.stages import sync_queue_size
from revavatar.graph.sync import ApproximateTimeSynchronizer

MS = 1_000_000
CAMS = ("left_eye", "right_eye", "lower_face")
EXPECTED_EDGES = {
    ("left_eye_camera", "/revavatar/left_eye/image_raw", "align_left_eye"),
    ("right_eye_camera", "/revavatar/right_eye/image_raw", "align_right_eye"),
    ("lower_face_camera", "/revavatar/lower_face/image_raw", "align_lower_face"),
    ("align_left_eye", "/revavatar/left_eye/aligned", "restoration"),
    ("align_right_eye", "/revavatar/right_eye/aligned", "restoration"),
    ("align_lower_face", "/revavatar/lower_face/aligned", "restoration"),
    ("restoration", "/revavatar/face/restored", "display"),
}


class FakeStage:
    """Forwards each input to every output port; the restoration fake synchronizes like the real
    one."""

    method = "fake"

    def __init__(self, stage: str, outputs: Mapping[str, str], depth: int, delay_s: float = 0.0):
        self.stage, self.outputs, self.delay_s = stage, list(outputs), delay_s
        self.sync = (ApproximateTimeSynchronizer(3, sync_queue_size(depth), 0)
                     if stage == "restoration" else None)
        self.gate: threading.Event | None = None
        self.entered = threading.Event()
        self.seen = 0

    def process(self, port: str, msg: Any) -> list[tuple[str, Any]]:
        self.seen += 1
        self.entered.set()
        if self.gate is not None:
            self.gate.wait()
        if self.delay_s:
            time.sleep(self.delay_s)
        if self.sync is not None:
            idx = [f"{c}/aligned" for c in CAMS].index(port)
            if self.sync.add(idx, msg) is None:
                return []
        return [(p, msg) for p in self.outputs]


def _fakes(spec, delays: Mapping[str, float] | None = None) -> dict[str, FakeStage]:
    delays = delays or {}
    return {n.name: FakeStage(n.stage, n.outputs, n.parameters["queue_depth"],
                              delays.get(n.name, 0)) for n in spec.nodes}


def _frames(n: int, period_ns: int = 33 * MS) -> Iterator[tuple[str, int, Image]]:
    for k in range(n):
        for cam in CAMS:
            stamp = k * period_ns
            yield f"/revavatar/{cam}/image_raw", stamp, Image(
                Header(Time.from_ns(stamp), cam), 1, 1, "mono8", 0, 1, b"\0")


def test_wiring_is_the_description() -> None:
    runner = GraphRunner(headset_graph("c.yaml", "p"))
    assert runner.wiring() == EXPECTED_EDGES


def test_rate_zero_is_lossless_with_a_slow_node() -> None:
    spec = headset_graph("c.yaml", "p", queue_depth=1, rate=0)
    stages = _fakes(spec, {"restoration": 0.002, "align_lower_face": 0.001})
    runner = GraphRunner(spec, stages=stages)
    assert runner.lossless
    report = runner.run(_frames(25))
    for name, fig in report["nodes"].items():
        assert fig["drops"] == 0, name
    assert report["nodes"]["restoration"]["frames"] == 75
    assert report["nodes"]["restoration"]["published"] == 50  # composite + restored per set
    assert report["nodes"]["display"]["frames"] == 25
    assert report["end_to_end"]["frames"] == 25
    assert report["frames_in"] == 75
    assert report["methods"]["avatar"] == "not implemented"
    assert report["methods"]["alignment"] == "fake"


def test_keep_last_queue_drops_oldest_and_counts_it() -> None:
    depth, n = 3, 12
    spec = headset_graph("c.yaml", "p", queue_depth=depth, rate=100.0)
    stages = _fakes(spec)
    slow = stages["left_eye_camera"]  # fed by playback directly: every put is done on resume
    slow.gate = threading.Event()
    delivered: list[int] = []

    def source() -> Iterator[tuple[str, int, Image]]:
        for i, item in enumerate(_frames(n)):
            yield item
            if i == 0:
                slow.entered.wait(5)  # frame 0 is being processed (and blocks on the gate)
        slow.gate.set()

    runner = GraphRunner(spec, stages=stages)
    runner.subscribe("/revavatar/left_eye/image_raw", lambda _, m: delivered.append(
        m.header.stamp.to_ns() // (33 * MS)))
    report = runner.run(source())
    fig = report["nodes"]["left_eye_camera"]
    # frame 0 in process, frames 1..n-1 arrive at a queue of depth 3: all but the last 3 dropped
    assert fig["drops"] == n - 1 - depth
    assert fig["frames"] == 1 + depth
    assert delivered == [0, n - 3, n - 2, n - 1]  # keep-last: the newest survive
    for cam in ("right_eye_camera", "lower_face_camera"):  # every frame processed or dropped
        other = report["nodes"][cam]
        assert other["frames"] + other["drops"] == n


def test_stage_error_stops_the_graph_and_is_raised() -> None:
    spec = headset_graph("c.yaml", "p", rate=0)
    stages = _fakes(spec)

    def boom(port: str, msg: Any) -> list:
        raise RuntimeError("kaput")

    stages["display"].process = boom  # type: ignore[method-assign]
    runner = GraphRunner(spec, stages=stages)
    with pytest.raises(RuntimeError, match="kaput"):
        runner.run(_frames(10))
    assert all(not w.thread.is_alive() for w in runner._workers.values())


def test_record_taps_every_graph_topic_and_rejects_unknown() -> None:
    spec = headset_graph("c.yaml", "p", rate=0)
    runner = GraphRunner(spec, stages=_fakes(spec))

    class Writer:
        def __init__(self) -> None:
            self.topics: list[str] = []

        def write(self, topic: str, msg: Any) -> None:
            self.topics.append(topic)

    w = Writer()
    recorded = runner.record(w)
    assert set(recorded) == spec.topics()
    runner.run(_frames(4))
    assert w.topics.count("/revavatar/display/image") == 4
    assert w.topics.count("/revavatar/left_eye/camera_info") == 4
    with pytest.raises(ValueError, match="not a topic"):
        runner.record(w, ["/nope"])


def test_negative_rate_rejected() -> None:
    with pytest.raises(ValueError, match="rate"):
        GraphRunner(headset_graph("c.yaml", "p"), rate=-1)


# ----------------------------------------------------------------------------------------------
# Real stages on a tiny session bag
# ----------------------------------------------------------------------------------------------


def _calibration_yaml() -> Path:
    root = Path(__file__).resolve().parents[1] / "calibration" / "generic.yaml"
    if not root.is_file():
        pytest.skip("calibration/generic.yaml not written yet")
    return root


def _camera_frame(face: np.ndarray, cam: Any, infrared: bool, k: int) -> np.ndarray:
    w, h = cam.resolution
    img = cv2.resize(face, (w, h), interpolation=cv2.INTER_AREA)
    img = np.roll(img, k, axis=1)  # a little motion
    return cv2.cvtColor(img, cv2.COLOR_BGR2GRAY) if infrared else img


def _write_session(path: Path, calibration: Any, face: np.ndarray, n: int, gt: bool) -> None:
    from revavatar.bag import SessionWriter

    with SessionWriter(path) as writer:
        for k in range(n):
            stamp = 1_000_000_000 + k * 33_333_333
            for cam in CAMS:
                c = calibration.camera(cam)
                arr = _camera_frame(face, c, c.infrared, k)
                enc = "mono8" if arr.ndim == 2 else "bgr8"
                jitter = {"left_eye": 0, "right_eye": 2 * MS, "lower_face": -3 * MS}[cam]
                writer.write(f"/revavatar/{cam}/image_raw",
                             array_to_image(arr, enc, stamp + jitter))
            if gt:
                truth = cv2.resize(face, (256, 256))
                writer.write("/revavatar/ground_truth/face", array_to_image(truth, "bgr8", stamp))


@pytest.fixture(scope="module")
def profile_dir(tmp_path_factory: pytest.TempPathFactory, request: pytest.FixtureRequest) -> Path:
    enrollment = pytest.importorskip("revavatar.core.enrollment")
    from revavatar.core.canonical import CanonicalLayout
    from revavatar.core.landmarks import FaceLandmarks

    layout = CanonicalLayout(256)
    face = request.getfixturevalue("face_image")
    dp = cv2.resize(face[:, 140:500], (256, 256))
    # only the DP matters to the restorer; any 68 points stand in for its landmarks
    pts = np.resize(layout.template_points().astype(np.float32), (68, 2))
    lm = FaceLandmarks(points=pts, points3d=None, scheme="dlib68", image_size=(256, 256),
                       score=1.0)
    profile = enrollment.Profile(dp=dp, landmarks=lm, mesh=None, layout_size=256, meta={})
    out = tmp_path_factory.mktemp("profile") / "p"
    profile.save(out)
    return out


def test_real_stages_end_to_end_lossless(tmp_path: Path, profile_dir: Path,
                                         face_image: np.ndarray) -> None:
    from revavatar.core.calibration import load_calibration
    from revavatar.graph.runner import run_session

    calib_path = _calibration_yaml()
    calibration = load_calibration(calib_path)
    bag = tmp_path / "session"
    _write_session(bag, calibration, face_image, n=6, gt=True)
    out = tmp_path / "out"
    report = run_session(calib_path, bag, profile_dir, out, rate=0, record=tmp_path / "rec",
                         progress=False)
    assert json.loads((out / "report.json").read_text())["nodes"] == report["nodes"]
    for name, fig in report["nodes"].items():
        assert fig["drops"] == 0, name
        assert fig["bad_frames"] == 0, name
    assert report["nodes"]["display"]["frames"] == 6
    assert report["end_to_end"]["frames"] == 6
    assert report["methods"] == {"ingestion": "bag", "alignment": "homography",
                                 "restoration": "paste+poisson",
                                 "display": report["methods"]["display"],
                                 "avatar": "not implemented"}
    assert report["metrics"]["frames"] == 6
    assert 0.0 < report["metrics"]["full"]["ssim"] <= 1.0
    assert set(report["metrics"]["flicker"]) == {"full", "eye"}
    assert all(np.isfinite(v) for v in report["metrics"]["flicker"].values())
    assert all(v >= 0 for v in report["metrics"]["truth_change"].values())
    cap = cv2.VideoCapture(str(out / "restored.mp4"))
    assert int(cap.get(cv2.CAP_PROP_FRAME_COUNT)) == 6
    cap.release()
    assert (out / "session" / "metadata.yaml").is_file()
    from revavatar.bag import SessionReader

    with SessionReader(tmp_path / "rec") as rec:
        counts = rec.message_counts
    assert counts["/revavatar/face/restored"] == 6
    assert counts["/revavatar/display/image"] == 6


def test_bag_without_ground_truth_has_empty_metrics_and_bad_bag_raises(
        tmp_path: Path, profile_dir: Path, face_image: np.ndarray) -> None:
    from revavatar.bag import SessionWriter
    from revavatar.core.calibration import load_calibration
    from revavatar.errors import BagError
    from revavatar.graph.runner import run_session

    calib_path = _calibration_yaml()
    calibration = load_calibration(calib_path)
    bag = tmp_path / "session"
    _write_session(bag, calibration, face_image, n=3, gt=False)
    report = run_session(calib_path, bag, profile_dir, tmp_path / "o", rate=0, progress=False)
    assert report["metrics"] == {}
    assert "ground_truth" in report["metrics_note"]
    bad = tmp_path / "bad"
    with SessionWriter(bad) as w:
        w.write("/revavatar/left_eye/image_raw",
                array_to_image(np.zeros((4, 4), np.uint8), "mono8"))
    with pytest.raises(BagError):
        run_session(calib_path, bad, profile_dir, tmp_path / "o2", rate=0, progress=False)


def _tiny_aligner(root: Path, input_mode: str) -> Path:
    """A tiny exported left-eye CycleGAN conditioned on the wearer, reading ``input_mode``."""
    import torch

    from revavatar.learning.alignment_model import AlignModelConfig, AlignmentModel, export_aligner

    torch.manual_seed(0)
    cfg = AlignModelConfig(region="left_eye", ngf=8, n_blocks=1, max_ch=16, ndf=8, bf16=False,
                           input_mode=input_mode, reference=True)
    export_aligner(AlignmentModel(cfg), root / "align_left_eye", {"steps": 0})
    return root


def test_alignment_nodes_read_the_profile_only_when_their_aligner_needs_it(
    profile_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Launch files give every alignment node the profile; a model on the plane that reads the
    wearer's DP runs with a profile that has no face mesh, a model on the enrolled surface and
    the surface aligner refuse it with a clear message."""
    from revavatar.graph.stages import STAGES

    base = {"camera": "left_eye", "calibration": str(_calibration_yaml()),
            "profile": str(profile_dir), "layout_size": 256}
    monkeypatch.setenv("REVAVATAR_MODELS", str(_tiny_aligner(tmp_path / "plane", "rectified")))
    learned = STAGES["alignment"]("align_left_eye", {**base, "method": "cyclegan"})
    assert learned.method == "cyclegan"
    assert learned.aligner.eye_from == "network"
    hybrid = STAGES["alignment"]("align_left_eye", {**base, "method": "cyclegan+camera_eye"})
    assert hybrid.aligner.eye_from == "camera"  # the same model, the camera's eye opening
    assert hybrid.method == "cyclegan+camera_eye"
    monkeypatch.setenv("REVAVATAR_MODELS", str(_tiny_aligner(tmp_path / "surf", "surface")))
    with pytest.raises(InputError, match="profile"):
        STAGES["alignment"]("align_left_eye", {**base, "method": "cyclegan"})
    assert STAGES["alignment"]("align_left_eye", {**base, "method": "homography"}).method == \
        "homography"
    with pytest.raises(InputError, match="face mesh"):
        STAGES["alignment"]("align_left_eye", {**base, "method": "surface"})
