"""VR-Face builder: index fields, splits, determinism across workers, resume, landmark cache."""

from __future__ import annotations

import argparse
import dataclasses
import json
from pathlib import Path

import cv2
import numpy as np
import pytest
from clips import write_video

from revavatar.core.canonical import CanonicalLayout
from revavatar.vrface.builder import FILE_FIELDS, BuildConfig, add_arguments, build, run_from_args

HEADSET = Path(__file__).resolve().parents[1] / "calibration" / "generic.yaml"
FIELDS = {"index", "identity", "split", "view", "expression", "expression_id", "head_pose",
          "gaze", "gaze_deg", "effects", "source", "reference_source", *FILE_FIELDS}


@pytest.fixture(scope="module")
def src(vrface_src: Path) -> Path:
    return vrface_src


def _config(src: Path, out: Path, cache: Path, **kw: object) -> BuildConfig:
    base = BuildConfig(src=src, headset=HEADSET, samples=14, out=out, workers=1, shard_size=6,
                       cache_dir=cache, effect_probability=0.5)
    return dataclasses.replace(base, **kw)


def _files(out: Path) -> dict[str, bytes]:
    return {p.relative_to(out).as_posix(): p.read_bytes() for p in sorted(out.rglob("*"))
            if p.is_file() and p.name != "meta.json" and "cache" not in p.relative_to(out).parts}


@pytest.fixture(scope="module")
def reference(src: Path, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path, object]:
    root = tmp_path_factory.mktemp("vrout")
    cache = root / "cache"
    summary = build(_config(src, root / "w1", cache), progress=False)
    return root / "w1", cache, summary


def test_index_has_every_field_and_files(reference: tuple[Path, Path, object]) -> None:
    out, _, summary = reference
    rows = json.loads((out / "index.json").read_text())
    assert summary.complete and summary.samples == 14 == len(rows)
    assert [r["index"] for r in rows] == list(range(14))
    for r in rows:
        assert set(r) >= FIELDS
        for name in FILE_FIELDS:
            assert (out / r[name]).is_file()
        assert r["gt"].startswith(f"shards/{r['index'] // 6:05d}/")
        gt = cv2.imread(str(out / r["gt"]), cv2.IMREAD_UNCHANGED)
        assert gt.shape == (256, 256, 3)
        assert cv2.imread(str(out / r["reference"]), cv2.IMREAD_UNCHANGED).shape == (256, 256, 3)
        eye = cv2.imread(str(out / r["left_eye"]), cv2.IMREAD_UNCHANGED)
        assert eye.shape == (240, 320)  # infrared eye camera: gray, calibration resolution
        assert cv2.imread(str(out / r["lower_face"]), cv2.IMREAD_UNCHANGED).shape == (240, 320, 3)
        # default "mixed" format: lossless targets, JPEG headset views
        assert all(r[n].endswith(".png") for n in ("gt", "reference", "gt_left_eye", "gt_lower_face"))
        assert all(r[n].endswith(".jpg") for n in ("left_eye", "right_eye", "lower_face"))
        crop = cv2.imread(str(out / r["gt_lower_face"]), cv2.IMREAD_UNCHANGED)
        assert crop.shape == (128, 192, 3)
        assert np.array_equal(crop, CanonicalLayout(256).crop_region(gt, "lower_face"))
        lm = np.load(out / r["landmarks"])
        assert lm.shape == (478, 2) and 0 < lm[:, 0].mean() < 256
        assert len(r["head_pose"]) == 3 and set(r["gaze"]) == {"left", "right"}
        assert r["reference_source"] != r["source"]
        if r["identity"] == "mead_W011":
            assert r["expression"] in ("happy", "neutral")
            assert r["expression_id"] == (4 if r["expression"] == "happy" else 5)
            assert "neutral" in r["reference_source"]["file"]
        else:
            assert r["expression"] is None and r["expression_id"] is None
        for eff in r["effects"]:
            assert eff["camera"] in ("left_eye", "right_eye", "lower_face")
            assert isinstance(eff["seed"], int) and isinstance(eff["params"], dict)
    meta = json.loads((out / "meta.json").read_text())
    assert meta["summary"]["splits"] == summary.splits
    assert (out / "contact_sheet.png").stat().st_size > 10_000


def test_identities_disjoint_and_single_frame_identity_excluded(
    reference: tuple[Path, Path, object],
) -> None:
    out, _, summary = reference
    rows = json.loads((out / "index.json").read_text())
    by_split: dict[str, set[str]] = {}
    for r in rows:
        by_split.setdefault(r["split"], set()).add(r["identity"])
    assert by_split == {"train": {"ann"}, "val": {"bo"}, "test": {"mead_W011"}}
    assert list(summary.excluded_identities) == ["solo"]
    assert sum(s["samples"] for s in summary.splits.values()) == 14
    assert summary.landmark_cache_misses == 6 and summary.frames_detected == 8 + 6 + 8 + 6 + 8 + 1


def test_two_workers_give_byte_identical_files(
    src: Path, reference: tuple[Path, Path, object], tmp_path: Path
) -> None:
    out1, cache, _ = reference
    summary = build(_config(src, tmp_path / "w2", cache, workers=2), progress=False)
    assert summary.landmark_cache_misses == 0 and summary.frames_detected == 0
    a, b = _files(out1), _files(tmp_path / "w2")
    assert sorted(a) == sorted(b)
    assert [k for k in a if a[k] != b[k]] == []


def test_resume_after_kill_is_identical(
    src: Path, reference: tuple[Path, Path, object], tmp_path: Path
) -> None:
    out1, cache, _ = reference
    out = tmp_path / "killed"
    first = build(_config(src, out, cache, stop_after=5, contact_sheet=False), progress=False)
    assert not first.complete and first.written == 5 and first.samples == 5
    rows = json.loads((out / "index.json").read_text())
    (out / rows[0]["right_eye"]).unlink()  # a sample whose files are incomplete
    jl = out / rows[1]["gt"].rsplit("/", 1)[0] / "index.jsonl"
    with jl.open("a") as fh:
        fh.write('{"index": 13, "trunc')  # a line torn by the kill
    second = build(_config(src, out, cache), progress=False)
    assert second.complete and second.resumed == 4 and second.written == 10
    a, b = _files(out1), _files(out)
    assert sorted(a) == sorted(b)
    assert [k for k in a if a[k] != b[k]] == []


def test_rebuild_never_calls_the_detector(
    src: Path, reference: tuple[Path, Path, object], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import revavatar.core.landmarks as landmarks

    _, cache, _ = reference
    calls = []
    real = landmarks.create_detector

    def counting(*args: object, **kw: object) -> object:
        calls.append(args)
        return real(*args, **kw)

    monkeypatch.setattr(landmarks, "create_detector", counting)
    again = build(_config(src, tmp_path / "again", cache, samples=3, contact_sheet=False),
                  progress=False)
    assert calls == [] and again.landmark_cache_hits == 6 and again.complete
    fresh = build(_config(src, tmp_path / "fresh", tmp_path / "c2", samples=3,
                          contact_sheet=False), progress=False)
    assert len(calls) == 6 and fresh.landmark_cache_misses == 6


def test_plain_folder_mode_and_cli_args(
    demo_frames: list[np.ndarray], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from revavatar.vrface.sources import assign_split

    small = [cv2.resize(f, (320, 180), interpolation=cv2.INTER_AREA) for f in demo_frames]
    root = tmp_path / "plain"
    root.mkdir()
    write_video(root / "kim.mp4", small[0:6])
    write_video(root / "lee.mp4", small[30:36])
    cv2.imwrite(str(root / "max.png"), small[50])
    parser = argparse.ArgumentParser()
    add_arguments(parser)
    args = parser.parse_args(["--src", str(root), "--headset", str(HEADSET), "--samples", "6",
                              "--out", str(tmp_path / "o"), "--workers", "1", "--no-progress",
                              "--effect-prob", "sensor_noise=0", "--effect-prob", "ir_look=1"])
    summary = run_from_args(args)
    assert json.loads(capsys.readouterr().out)["samples"] == 6
    rows = json.loads((tmp_path / "o" / "index.json").read_text())
    assert {r["identity"] for r in rows} == {"kim", "lee"}
    assert all(r["split"] == assign_split(r["identity"]) for r in rows)
    assert all(e["effect"] != "sensor_noise" for r in rows for e in r["effects"])
    ir = [e["camera"] for r in rows for e in r["effects"] if e["effect"] == "ir_look"]
    assert sorted(set(ir)) == ["left_eye", "right_eye"]  # never on the colour lower-face camera
    assert summary.excluded_identities.keys() == {"max"}


def test_shared_per_frame_work_does_not_change_samples(
    src: Path, reference: tuple[Path, Path, object], tmp_path: Path
) -> None:
    """Samples share renders, ground truth and links with others of their frame; a build with
    fewer samples (so other sharing) and lossless PNG views must give the same first samples."""
    out1, cache, _ = reference
    small = build(_config(src, tmp_path / "few", cache, samples=5, contact_sheet=False),
                  progress=False)
    png = build(_config(src, tmp_path / "png", cache, image_format="png", contact_sheet=False,
                        chunk_size=2), progress=False)
    assert small.complete and png.complete
    rows1 = json.loads((out1 / "index.json").read_text())
    rows_few = json.loads((tmp_path / "few" / "index.json").read_text())
    rows_png = json.loads((tmp_path / "png" / "index.json").read_text())
    assert rows_few == rows1[:5]
    for r, p in zip(rows1, rows_png, strict=True):
        assert {k: v for k, v in r.items() if k not in FILE_FIELDS} == {
            k: v for k, v in p.items() if k not in FILE_FIELDS}  # same content, other files
        for name in FILE_FIELDS:
            if r["index"] < 5:
                assert (out1 / r[name]).read_bytes() == (tmp_path / "few" / r[name]).read_bytes()
            a = cv2.imread(str(out1 / r[name]), cv2.IMREAD_UNCHANGED) if name != "landmarks" else None
            b = cv2.imread(str(tmp_path / "png" / p[name]), cv2.IMREAD_UNCHANGED) if a is not None else None
            if a is None:
                continue
            if name in ("left_eye", "right_eye", "lower_face"):  # JPEG q95 of the same pixels
                mse = float(np.mean((a.astype(np.float64) - b.astype(np.float64)) ** 2))
                assert a.shape == b.shape and 10 * np.log10(255.0**2 / max(mse, 1e-9)) > 30
            else:
                assert np.array_equal(a, b)
