"""VR-Face sources: manifest / plain-folder scanning, splits, decoding, landmark cache, plan."""

from __future__ import annotations

import os
from pathlib import Path

import cv2
import numpy as np
import pytest

from revavatar.errors import InputError
from revavatar.vrface import sources
from revavatar.vrface.sources import (
    LandmarkCache,
    SourceLandmarks,
    assign_split,
    check_disjoint_splits,
    iter_frames,
    parse_expression,
    plan_samples,
    scan_sources,
)
from clips import write_video


@pytest.fixture(scope="module")
def small(demo_frames: list[np.ndarray]) -> list[np.ndarray]:
    return [cv2.resize(f, (320, 180), interpolation=cv2.INTER_AREA) for f in demo_frames[:24]]


def test_parse_expression_mead_names() -> None:
    assert parse_expression("dreamtalk/M030_front_neutral_level1_001.mp4") == "neutral"
    assert parse_expression("W009_front_surprised_level3_001.mp4") == "surprised"
    assert parse_expression("styletalk/happyenglish_clip1.mp4") is None


def test_assign_split_is_a_stable_hash_with_roughly_70_15_15() -> None:
    names = [f"person_{i}" for i in range(2000)]
    splits = [assign_split(n) for n in names]
    assert splits == [assign_split(n) for n in names]
    share = {s: splits.count(s) / len(splits) for s in ("train", "val", "test")}
    assert 0.65 < share["train"] < 0.75
    assert 0.11 < share["val"] < 0.19
    assert 0.11 < share["test"] < 0.19


def test_identity_in_two_splits_is_rejected(tmp_path: Path, small: list[np.ndarray]) -> None:
    write_video(tmp_path / "a.mp4", small[:4])
    write_video(tmp_path / "b.mp4", small[4:8])
    (tmp_path / "MANIFEST.csv").write_text("file,identity,split\na.mp4,ann,train\nb.mp4,ann,test\n")
    with pytest.raises(InputError, match="ann"):
        scan_sources(tmp_path)
    with pytest.raises(InputError):
        check_disjoint_splits([("x", "train"), ("x", "val")])


def test_manifest_mode_reads_columns_and_ignores_extras(tmp_path: Path, small: list[np.ndarray]) -> None:
    write_video(tmp_path / "M030_front_sad_level3_001.mp4", small[:4])
    cv2.imwrite(str(tmp_path / "still.png"), small[5])
    (tmp_path / "MANIFEST.csv").write_text(
        "file,notes,identity,split,fps\nM030_front_sad_level3_001.mp4,n,m30,val,24\nstill.png,,m30,val,\n")
    files = scan_sources(tmp_path)
    assert [f.rel for f in files] == ["M030_front_sad_level3_001.mp4", "still.png"]
    assert [f.kind for f in files] == ["video", "image"]
    assert {f.identity for f in files} == {"m30"} and {f.split for f in files} == {"val"}
    assert files[0].expression == "sad" and files[1].expression is None


def test_manifest_missing_file_or_column(tmp_path: Path) -> None:
    (tmp_path / "MANIFEST.csv").write_text("file,identity\nx.mp4,a\n")
    with pytest.raises(InputError, match="split"):
        scan_sources(tmp_path)
    (tmp_path / "MANIFEST.csv").write_text("file,identity,split\nx.mp4,a,train\n")
    with pytest.raises(InputError, match="no such file"):
        scan_sources(tmp_path)


def test_plain_folder_mode_one_identity_per_file(tmp_path: Path, small: list[np.ndarray]) -> None:
    (tmp_path / "sub").mkdir()
    write_video(tmp_path / "sub" / "zoe.mp4", small[:4])
    cv2.imwrite(str(tmp_path / "yan.jpg"), small[3])
    (tmp_path / "notes.txt").write_text("ignored")
    files = scan_sources(tmp_path)
    assert [(f.rel, f.identity) for f in files] == [("sub/zoe.mp4", "zoe"), ("yan.jpg", "yan")]
    assert [f.split for f in files] == [assign_split("zoe"), assign_split("yan")]


def test_iter_frames_subset_matches_full_decode(tmp_path: Path, small: list[np.ndarray]) -> None:
    write_video(tmp_path / "v.mp4", small[:10])
    (src,) = scan_sources(tmp_path)
    full = dict(iter_frames(src))
    assert sorted(full) == list(range(10))
    part = dict(iter_frames(src, [7, 2, 2]))
    assert sorted(part) == [2, 7]
    assert all(np.array_equal(part[i], full[i]) for i in part)
    assert list(iter_frames(src, [])) == []


def _fake_landmarks(n: int, frames: list[int]) -> SourceLandmarks:
    k = len(frames)
    return SourceLandmarks(np.asarray(frames, np.int32), np.zeros((k, 478, 2), np.float32),
                           np.zeros((k, 478, 3), np.float32), (320, 180), n)


def test_landmark_cache_hits_and_invalidates_on_change(
    tmp_path: Path, small: list[np.ndarray], monkeypatch: pytest.MonkeyPatch
) -> None:
    (tmp_path / "src").mkdir()
    write_video(tmp_path / "src" / "v.mp4", small[:6])
    (src,) = scan_sources(tmp_path / "src")
    calls: list[str] = []

    def fake_detect(source: sources.SourceFile, backend: str = "mediapipe") -> SourceLandmarks:
        calls.append(source.rel)
        return _fake_landmarks(6, [0, 2, 5])

    monkeypatch.setattr(sources, "detect_source", fake_detect)
    cache = LandmarkCache(tmp_path / "cache")
    first, hit1 = cache.get(src)
    second, hit2 = cache.get(src)
    assert (hit1, hit2) == (False, True) and calls == ["v.mp4"]
    assert second.frames.tolist() == [0, 2, 5] and second.n_frames == 6
    assert second.points.shape == (3, 478, 2) and second.image_size == (320, 180)
    st = src.path.stat()
    os.utime(src.path, ns=(st.st_atime_ns, st.st_mtime_ns + 10**9))  # file "changed"
    _, hit3 = cache.get(src)
    assert not hit3 and len(calls) == 2
    _, hit4 = LandmarkCache(tmp_path / "cache", backend="dlib").get(src)
    assert not hit4 and len(calls) == 3


def test_real_detector_finds_faces_in_demo_frames(tmp_path: Path, small: list[np.ndarray]) -> None:
    write_video(tmp_path / "v.mp4", small[:5])
    (src,) = scan_sources(tmp_path)
    lms = sources.detect_source(src)
    assert lms.n_frames == 5 and len(lms.frames) >= 4
    assert lms.points.shape[1:] == (478, 2) and lms.points3d.shape[1:] == (478, 3)
    lm = lms.landmarks(0)
    assert lm.scheme == "mediapipe478"
    assert 0 < lm.points[:, 0].min() < lm.points[:, 0].max() < 320


def _plan_inputs(tmp_path: Path, small: list[np.ndarray]) -> tuple[list, list]:
    write_video(tmp_path / "a1.mp4", small[:8])
    write_video(tmp_path / "a2.mp4", small[8:12])
    write_video(tmp_path / "W009_front_happy_level3_001.mp4", small[12:18])
    write_video(tmp_path / "W009_front_neutral_level1_001.mp4", small[18:24])
    cv2.imwrite(str(tmp_path / "solo.png"), small[0])
    (tmp_path / "MANIFEST.csv").write_text(
        "file,identity,split\na1.mp4,a,train\na2.mp4,a,train\n"
        "W009_front_happy_level3_001.mp4,w9,val\nW009_front_neutral_level1_001.mp4,w9,val\n"
        "solo.png,solo,test\n")
    files = scan_sources(tmp_path)
    n = {"a1.mp4": 8, "a2.mp4": 4, "solo.png": 1}
    dets = [_fake_landmarks(n.get(f.rel, 6), list(range(n.get(f.rel, 6)))) for f in files]
    return files, dets


def test_plan_is_deterministic_prefix_stable_and_sane(tmp_path: Path, small: list[np.ndarray]) -> None:
    files, dets = _plan_inputs(tmp_path, small)
    kw = {"seed": 3, "views": ("front", "top-30"), "effect_probs": {"blur": 0.5, "noise": 0.5}}
    plans, excluded = plan_samples(files, dets, samples=40, **kw)
    again, _ = plan_samples(files, dets, samples=40, **kw)
    longer, _ = plan_samples(files, dets, samples=60, **kw)
    other, _ = plan_samples(files, dets, samples=40, **{**kw, "seed": 4})
    assert plans == again and longer[:40] == plans and other != plans
    assert list(excluded) == ["solo"]
    used = {files[p.file].identity for p in plans}
    assert used == {"a", "w9"}
    for p in plans:
        assert files[p.ref_file].identity == files[p.file].identity
        assert (p.ref_file, p.ref_frame) != (p.file, p.frame)
        assert p.view in kw["views"] and set(p.effects) <= {"blur", "noise"}
        if files[p.file].identity == "w9":  # MEAD: the DP is the neutral clip
            assert files[p.ref_file].expression == "neutral"
        else:  # another file of the same person is preferred
            assert p.ref_file != p.file
    a_frames = [(p.file, p.frame) for p in plans if files[p.file].identity == "a"]
    assert len(a_frames) > 12  # identity "a" has 12 frames: each once before any repeats
    assert len(set(a_frames[:12])) == 12 and set(a_frames) == set(a_frames[:12])
