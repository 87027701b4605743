"""``revavatar eval restore``: every method on the same composites, JSON schema and table."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from revavatar.learning.data import write_toy_build
from revavatar.learning.eval_restore import METHODS, evaluate, markdown_table

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def report(tmp_path_factory: pytest.TempPathFactory) -> dict:
    toy = write_toy_build(tmp_path_factory.mktemp("toy"), samples=12)
    rep, shown = evaluate(toy, ROOT / "models", keep=1)
    assert len(shown) == 1
    return rep


def test_schema_every_method_listed(report: dict) -> None:
    assert json.loads(json.dumps(report)) == report
    assert report["n"] == 2  # toy5 is the test identity: samples 5 and 11
    assert tuple(report["methods"]) == METHODS
    for m in ("dp_only", "paste", "poisson", "ours"):  # classical ones and the committed model
        r = report["methods"][m]
        for region in ("full", "eye"):
            assert set(r[region]) == {"ssim", "psnr", "lpips"}
            assert 0.0 < r[region]["ssim"] <= 1.0
        assert r["ms"] >= 0.0
    # pasting the live crops changes the eye region of the DP, and only roughly the same way
    # as the learned restorer does
    eye = {m: report["methods"][m]["eye"]["psnr"] for m in ("dp_only", "paste", "ours")}
    assert len(set(eye.values())) == 3


def test_markdown_table_marks_the_best_and_the_missing() -> None:
    fig = {"ssim": 0.5, "psnr": 20.0, "lpips": 0.2}
    rep = {"n": 3, "methods": {
        "paste": {"full": fig, "eye": fig, "identity": None, "ms": 1.0},
        "ours": {"full": {**fig, "psnr": 21.0}, "eye": {**fig, "lpips": 0.1}, "identity": 0.9,
                 "ms": 12.0},
        "cyclegan": {"full": None, "eye": None, "identity": None, "ms": None,
                     "missing": "no trained model"}}}
    lines = markdown_table(rep).splitlines()
    assert len(lines) == 5
    assert "**21.00**" in lines[3] and "**0.1000**" in lines[3] and "0.900" in lines[3]
    paste = [c.strip() for c in lines[2].split("|")]
    assert paste[3] == "20.00"  # full PSNR: ours is better, not bold
    assert paste[6] == "**20.00**"  # eye PSNR: a tie, both bold
    assert lines[4].startswith("| cyclegan | no trained model |")
