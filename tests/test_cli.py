"""User errors end with one line on stderr and exit status 2, never a traceback."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pytest

from revavatar.cli import main

ROOT = Path(__file__).resolve().parents[1]
GENERIC = str(ROOT / "calibration" / "generic.yaml")


def _run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str]:
    code = main(list(argv))
    err = capsys.readouterr().err.strip()
    return code, err


def test_missing_bag(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    code, err = _run(capsys, "run", "--headset", GENERIC, "--bag", str(tmp_path / "nope"))
    assert code == 2
    assert err.startswith("revavatar: error:") and "nope" in err and len(err.splitlines()) == 1


def test_missing_headset(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    code, err = _run(capsys, "run", "--headset", str(tmp_path / "h.yaml"), "--bag", str(tmp_path))
    assert code == 2 and "h.yaml" in err


def test_missing_profile(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    code, err = _run(
        capsys, "run", "--headset", GENERIC, "--bag", str(tmp_path), "--profile", str(tmp_path / "p")
    )
    assert code == 2 and "profile" in err


def test_bad_calibration_names_key(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text(Path(GENERIC).read_text().replace("fps:", "fsp:", 1))
    code, err = _run(capsys, "record", "--headset", str(bad), "--out", str(tmp_path / "o"),
                     "--left-eye", "x.mp4", "--right-eye", "x.mp4", "--lower-face", "x.mp4")
    assert code == 2 and "bad.yaml" in err and "fsp" in err


def test_undecodable_video(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    junk = tmp_path / "junk.mp4"
    junk.write_bytes(b"not a video at all" * 100)
    code, err = _run(capsys, "enroll", "--video", str(junk), "--out", str(tmp_path / "p"))
    assert code == 2 and "junk.mp4" in err


def test_no_face_in_dp(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    blank = tmp_path / "wall.png"
    cv2.imwrite(str(blank), np.full((240, 320, 3), 128, np.uint8))
    code, err = _run(capsys, "enroll", "--image", str(blank), "--out", str(tmp_path / "p"))
    assert code == 2 and "no face" in err and "wall.png" in err
    assert not (tmp_path / "p").exists()


def test_enroll_refuses_a_shape_from_no_frames(capsys, tmp_path):
    with pytest.raises(SystemExit) as err:
        main(["enroll", "--video", str(tmp_path / "c.mp4"), "--out", str(tmp_path / "p"),
              "--shape-frames", "0"])
    assert err.value.code == 2
    assert "expected an integer >= 1, got '0'" in capsys.readouterr().err


def test_eval_align_refuses_a_shape_from_no_frames(capsys, tmp_path):
    with pytest.raises(SystemExit) as err:  # a usage error before any data is read
        main(["eval", "align", "--data", str(tmp_path), "--enroll-frames", "0"])
    assert err.value.code == 2
    assert "expected an integer >= 1, got '0'" in capsys.readouterr().err
