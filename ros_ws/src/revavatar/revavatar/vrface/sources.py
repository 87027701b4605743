"""Face sources of the VR-Face builder: ``--src`` contents, decoding, landmark cache, sample plan.

A source folder is either described by a ``MANIFEST.csv`` (columns at least ``file``,
``identity``, ``split``; others ignored) or is a plain folder of videos and stills where each file
is one identity (its stem) and the split is drawn by hashing the identity, so it never changes
between builds and an identity never lands in two splits.

The atomic file helpers of the build output live here too (temp + rename writes, hard links,
the resumable shard indexes), and so does the sample plan, because it is a pure function of the
sources and their cached landmarks (which frame of which identity, which view, effects and
reference per sample index).

Landmarks are the slow part of a build (one face-mesh pass per frame), so they are computed once
per source file and cached as ``.npz`` keyed by path, size, mtime and backend; a rebuild with other
sample counts, seeds or effects reads them back instead of running the detector again.
"""

from __future__ import annotations

import csv
import hashlib
import io
import json
import math
import os
import re
import zlib
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Final

import numpy as np

from revavatar.errors import InputError

if TYPE_CHECKING:
    from revavatar.core.landmarks import FaceLandmarks

__all__ = [
    "EXPRESSIONS",
    "IMAGE_EXTENSIONS",
    "SPLITS",
    "VIDEO_EXTENSIONS",
    "LandmarkCache",
    "SamplePlan",
    "SourceFile",
    "SourceLandmarks",
    "assign_split",
    "atomic_write",
    "check_disjoint_splits",
    "chunk_plans",
    "complete_entries",
    "dataset_bytes",
    "detect_source",
    "iter_frames",
    "link_or_copy",
    "merge_index",
    "parse_expression",
    "plan_samples",
    "scan_sources",
    "sources_fingerprint",
]

#: The eight MEAD expressions, in the order of the paper's expression labels (id = index).
EXPRESSIONS: Final = ("angry", "contempt", "disgusted", "fear", "happy", "neutral", "sad", "surprised")
SPLITS: Final = ("train", "val", "test")
VIDEO_EXTENSIONS: Final = frozenset({".mp4", ".avi", ".mov", ".mkv", ".webm", ".m4v", ".mpg"})
IMAGE_EXTENSIONS: Final = frozenset({".png", ".jpg", ".jpeg", ".bmp", ".webp", ".tif", ".tiff"})
_MEAD_RE: Final = re.compile(r"_(" + "|".join(EXPRESSIONS) + r")_level_?\d", re.IGNORECASE)
_CACHE_VERSION: Final = 1
_PHI: Final = (math.sqrt(5.0) - 1.0) / 2.0  # golden-ratio step: low-discrepancy identity draw


@dataclass(frozen=True)
class SourceFile:
    """One video or still of the source folder."""

    path: Path  # absolute
    rel: str  # path relative to the source folder, POSIX separators (what the index records)
    identity: str
    split: str
    kind: str  # "video" | "image"
    expression: str | None  # one of EXPRESSIONS when the file name (or manifest) says so


@dataclass(frozen=True)
class SourceLandmarks:
    """Cached detections of one source file: only frames where a face was found."""

    frames: np.ndarray  # (K,) int32 frame indices (decode order)
    points: np.ndarray  # (K, N, 2) float32 image px
    points3d: np.ndarray  # (K, N, 3) float32
    image_size: tuple[int, int]  # (w, h)
    n_frames: int  # frames decoded in total (with or without a face)
    scheme: str = "mediapipe478"

    def landmarks(self, k: int) -> FaceLandmarks:
        """The k-th detection (k indexes ``frames``, not the frame number) as FaceLandmarks."""
        from revavatar.core.landmarks import FaceLandmarks

        return FaceLandmarks(
            points=self.points[k],
            points3d=self.points3d[k],
            scheme=self.scheme,
            image_size=self.image_size,
            score=1.0,
        )


def atomic_write(path: Path, data: bytes) -> None:
    """Write ``data`` to ``path`` through a temp file and a rename: a killed build never leaves a
    torn file, only a complete one or none (a stray ``.tmp-*`` at worst)."""
    path = Path(path)
    tmp = path.with_name(f".tmp-{os.getpid()}-{path.name}")
    tmp.write_bytes(data)
    os.replace(tmp, path)


def link_or_copy(src: Path, dst: Path) -> None:
    """Hard-link ``src`` to ``dst`` atomically (copy where links are not supported).

    Samples of one frame share its ground truth, crops and landmarks byte for byte; linking
    saves the encode time and the disk of those files (about half a sample).
    """
    tmp = dst.with_name(f".tmp-{os.getpid()}-{dst.name}")
    tmp.unlink(missing_ok=True)
    try:
        os.link(src, tmp)
    except OSError:
        tmp.write_bytes(src.read_bytes())
    os.replace(tmp, dst)


def complete_entries(out: Path, key: str, samples: int, fields: tuple[str, ...]) -> dict[int, dict[str, Any]]:
    """Complete samples of build ``key`` in ``out`` (every file in ``fields`` on disk) by index;
    rewrites each shard index without torn, stale or duplicate lines (a killed build resumes)."""
    done: dict[int, dict[str, Any]] = {}
    for jl in sorted((out / "shards").glob("*/index.jsonl")):
        keep = []
        for line in jl.read_text().splitlines():
            try:
                entry = json.loads(line)
            except json.JSONDecodeError:
                continue  # a line torn by a kill
            if entry.get("key") != key or entry["index"] >= samples:
                continue
            if all((out / entry[n]).is_file() for n in fields):
                done[entry["index"]] = entry
                keep.append((entry["index"], line))
        keep = sorted(dict(keep).items())  # one line per sample, in index order (deterministic)
        atomic_write(jl, "".join(f"{ln}\n" for _, ln in keep).encode())
    return done


def merge_index(out: Path, key: str, samples: int, fields: tuple[str, ...]) -> list[dict[str, Any]]:
    """Write ``out/index.json``: the complete samples in index order, without the build key."""
    entries = complete_entries(out, key, samples, fields)
    rows = [entries[i] for i in sorted(entries)]
    for r in rows:
        r.pop("key", None)
    atomic_write(out / "index.json", json.dumps(rows, separators=(",", ":")).encode())
    return rows


def dataset_bytes(out: Path, rows: list[dict[str, Any]], fields: tuple[str, ...]) -> int:
    """Disk bytes of the listed files, counting shared (linked or reused) files once."""
    seen: dict[tuple[int, int], int] = {}
    for r in rows:
        for n in fields:
            st = (out / r[n]).stat()
            seen[(st.st_dev, st.st_ino)] = st.st_size
    return sum(seen.values()) + (out / "index.json").stat().st_size


def parse_expression(name: str) -> str | None:
    """MEAD-style expression in a file name (``M030_front_happy_level3_001.mp4`` -> ``happy``)."""
    m = _MEAD_RE.search(Path(name).name)
    return m.group(1).lower() if m else None


def assign_split(identity: str, ratios: tuple[float, float, float] = (0.70, 0.15, 0.15)) -> str:
    """Deterministic split of an identity from a hash of its name (~70/15/15).

    A hash rather than a random draw so that adding files never moves an existing identity to
    another split (which would leak test faces into training).
    """
    h = int.from_bytes(hashlib.sha1(identity.encode()).digest()[:8], "big") / 2**64
    cum = np.cumsum(ratios) / float(sum(ratios))
    return SPLITS[int(np.searchsorted(cum, h, side="right"))] if h < cum[-1] else SPLITS[-1]


def check_disjoint_splits(pairs: Iterable[tuple[str, str]]) -> dict[str, str]:
    """Map identity -> split, raising if an identity appears in two splits.

    Raises:
        InputError: an identity has files in more than one split.
    """
    seen: dict[str, str] = {}
    for identity, split in pairs:
        if seen.setdefault(identity, split) != split:
            msg = f"identity {identity!r} is in two splits ({seen[identity]} and {split})"
            raise InputError(msg)
    return seen


def _kind(path: Path) -> str | None:
    ext = path.suffix.lower()
    if ext in VIDEO_EXTENSIONS:
        return "video"
    if ext in IMAGE_EXTENSIONS:
        return "image"
    return None


def _scan_manifest(src: Path, manifest: Path) -> list[SourceFile]:
    with manifest.open(newline="", encoding="utf-8") as fh:
        reader = csv.DictReader(fh)
        missing = {"file", "identity", "split"} - set(reader.fieldnames or ())
        if missing:
            msg = f"{manifest}: missing column(s) {', '.join(sorted(missing))}"
            raise InputError(msg)
        rows = list(reader)
    out = []
    for line, row in enumerate(rows, start=2):
        rel = row["file"].strip()
        split = row["split"].strip().lower()
        if split not in SPLITS:
            msg = f"{manifest}:{line}: split must be one of {', '.join(SPLITS)}, got {split!r}"
            raise InputError(msg)
        path = (src / rel).resolve()
        kind = _kind(path)
        if kind is None:
            msg = f"{manifest}:{line}: {rel}: not a video or image file"
            raise InputError(msg)
        if not path.is_file():
            msg = f"{manifest}:{line}: no such file {path}"
            raise InputError(msg)
        expr = (row.get("expression") or "").strip().lower() or parse_expression(rel)
        if expr is not None and expr not in EXPRESSIONS:
            expr = None
        out.append(SourceFile(path, Path(rel).as_posix(), row["identity"].strip(), split, kind, expr))
    return out


def scan_sources(src: Path) -> list[SourceFile]:
    """The source files of ``src`` (manifest mode if ``MANIFEST.csv`` exists), sorted by path.

    Raises:
        InputError: missing folder, unreadable manifest, no usable file, or an identity in two
            splits.
    """
    src = Path(src)
    if not src.is_dir():
        msg = f"source folder not found: {src}"
        raise InputError(msg)
    manifest = src / "MANIFEST.csv"
    if manifest.is_file():
        files = _scan_manifest(src, manifest)
    else:
        files = []
        for path in sorted(src.rglob("*")):
            kind = _kind(path)
            if kind is None or not path.is_file() or path.name.startswith("."):
                continue
            identity = path.stem
            rel = path.relative_to(src).as_posix()
            files.append(
                SourceFile(path.resolve(), rel, identity, assign_split(identity), kind,
                           parse_expression(rel))
            )
    if not files:
        msg = f"no videos or images found in {src}"
        raise InputError(msg)
    check_disjoint_splits((f.identity, f.split) for f in files)
    return sorted(files, key=lambda f: f.rel)


def iter_frames(source: SourceFile, wanted: Iterable[int] | None = None) -> Iterator[tuple[int, np.ndarray]]:
    """Decode frames in order, yielding ``(index, bgr)`` for ``wanted`` indices (all if None).

    Always decodes sequentially from the first frame (``grab`` for the unwanted ones) instead of
    seeking: seeking in mp4 is inexact, and a frame index must mean the same pixels in the
    landmark pass and in every worker, or determinism breaks.

    Raises:
        InputError: the file does not open.
    """
    import cv2

    want = None if wanted is None else sorted({int(i) for i in wanted})
    if want is not None and not want:
        return
    if source.kind == "image":
        if want is not None and 0 not in want:
            return
        img = cv2.imread(str(source.path), cv2.IMREAD_COLOR)
        if img is None:
            msg = f"cannot read image {source.path}"
            raise InputError(msg)
        yield 0, img
        return
    cap = cv2.VideoCapture(str(source.path))
    if not cap.isOpened():
        msg = f"cannot open video {source.path}"
        raise InputError(msg)
    try:
        last = want[-1] if want else None
        wset = None if want is None else set(want)
        idx = 0
        while last is None or idx <= last:
            if wset is None or idx in wset:
                ok, frame = cap.read()
                if not ok:
                    break
                yield idx, frame
            elif not cap.grab():
                break
            idx += 1
    finally:
        cap.release()


def detect_source(source: SourceFile, backend: str = "mediapipe") -> SourceLandmarks:
    """Run the landmark detector over every frame of ``source`` (tracking mode for videos)."""
    from revavatar.core.landmarks import create_detector

    detector = create_detector(backend, static_image=source.kind == "image")
    frames, pts, p3s = [], [], []
    size = (0, 0)
    n = 0
    try:
        for idx, frame in iter_frames(source):
            n += 1
            size = (frame.shape[1], frame.shape[0])
            lm = detector.detect(frame)
            if lm is None or lm.points3d is None or len(lm.points) < 468:
                continue  # no face (or a 2D-only backend): the frame is not usable
            frames.append(idx)
            pts.append(lm.points)
            p3s.append(lm.points3d)
    finally:
        close = getattr(detector, "close", None)
        if callable(close):
            close()
    npts = pts[0].shape[0] if pts else 478
    return SourceLandmarks(
        frames=np.asarray(frames, dtype=np.int32),
        points=np.asarray(pts, dtype=np.float32).reshape(-1, npts, 2),
        points3d=np.asarray(p3s, dtype=np.float32).reshape(-1, npts, 3),
        image_size=size,
        n_frames=n,
        scheme="mediapipe478" if npts == 478 else "mediapipe468",
    )


class LandmarkCache:
    """Per-source-file landmark cache (``.npz``) keyed by path, size, mtime and backend."""

    def __init__(self, cache_dir: Path, backend: str = "mediapipe") -> None:
        self.dir = Path(cache_dir) / "landmarks"
        self.backend = backend

    def path_for(self, source: SourceFile) -> Path:
        """Cache file of ``source``; changes whenever the file or the backend changes."""
        st = source.path.stat()
        key = f"{source.path}|{st.st_size}|{st.st_mtime_ns}|{self.backend}|v{_CACHE_VERSION}"
        digest = hashlib.sha1(key.encode()).hexdigest()[:16]
        return self.dir / f"{source.path.stem}-{digest}.npz"

    def load(self, source: SourceFile, path: Path | None = None) -> SourceLandmarks | None:
        """Cached detections of ``source`` (from ``path`` if given), or None when absent or
        unreadable."""
        path = path or self.path_for(source)
        if not path.is_file():
            return None
        try:
            with np.load(path, allow_pickle=False) as z:
                return SourceLandmarks(
                    frames=z["frames"], points=z["points"], points3d=z["points3d"],
                    image_size=(int(z["image_size"][0]), int(z["image_size"][1])),
                    n_frames=int(z["n_frames"]), scheme=str(z["scheme"]),
                )
        except (OSError, KeyError, ValueError):
            return None

    def store(self, source: SourceFile, lms: SourceLandmarks) -> Path:
        """Write ``lms`` atomically (temp file + rename) so a killed build leaves no torn cache."""
        path = self.path_for(source)
        self.dir.mkdir(parents=True, exist_ok=True)
        bio = io.BytesIO()
        np.savez(bio, frames=lms.frames, points=lms.points, points3d=lms.points3d,
                 image_size=np.asarray(lms.image_size), n_frames=np.asarray(lms.n_frames),
                 scheme=np.asarray(lms.scheme))
        atomic_write(path, bio.getvalue())
        return path

    def get(self, source: SourceFile) -> tuple[SourceLandmarks, bool]:
        """(detections, cache_hit): load from the cache, else detect and store."""
        hit = self.load(source)
        if hit is not None:
            return hit, True
        lms = detect_source(source, self.backend)
        self.store(source, lms)
        return lms, False


@dataclass(frozen=True)
class SamplePlan:
    """Everything a worker needs to make sample ``index`` (picklable, content-determining)."""

    index: int
    file: int  # index into the source list
    frame: int
    det: int  # index into that file's SourceLandmarks
    ref_file: int
    ref_frame: int
    view: str
    effects: tuple[str, ...]


def _reference_pool(files: list[SourceFile], dets: list[SourceLandmarks], members: list[int],
                    size: int) -> list[tuple[int, int]]:
    """Up to ``size`` (file, frame) references of one identity: neutral when known, stills first,
    then frames spread evenly over every file (so a different file or a far frame exists)."""
    neutral = [f for f in members if files[f].expression == "neutral"]
    cand = neutral or members
    stills = [(f, int(dets[f].frames[0])) for f in cand if files[f].kind == "image"]
    videos = [f for f in cand if files[f].kind == "video"]
    per_file = math.ceil(max(size - len(stills), 1) / max(len(videos), 1))
    spread = []
    for f in videos:
        fr = dets[f].frames
        m = min(per_file, len(fr))
        spread.append([(f, int(fr[int((j + 0.5) * len(fr) / m)])) for j in range(m)])
    pool = list(stills)
    for j in range(max((len(s) for s in spread), default=0)):
        pool.extend(s[j] for s in spread if j < len(s))
    pool = pool[:max(size, 2)]
    if len(pool) < 2 and cand is not members:  # one neutral frame only: add any other frame
        extra = _reference_pool(files, dets, [f for f in members if f not in cand], size)
        pool.extend(p for p in extra if p not in pool)
    return pool


def _pick_reference(pool: list[tuple[int, int]], file: int, frame: int, n_frames: int,
                    rng: np.random.Generator) -> tuple[int, int]:
    others = [p for p in pool if p != (file, frame)]
    other_files = [p for p in others if p[0] != file]
    if other_files:
        return other_files[int(rng.integers(len(other_files)))]
    far = sorted(others, key=lambda p: -abs(p[1] - frame))
    far = far[:max(1, len(far) // 2)] if abs(far[0][1] - frame) >= n_frames / 4 else far[:1]
    return far[int(rng.integers(len(far)))]


def plan_samples(
    files: list[SourceFile], dets: list[SourceLandmarks], *, samples: int, seed: int,
    views: tuple[str, ...], effect_probs: Mapping[str, float], reference_pool: int = 8,
) -> tuple[list[SamplePlan], dict[str, str]]:
    """The deterministic sample plan: (plans, excluded identity -> reason).

    ``effect_probs`` maps every effect that may be drawn to its probability (drawn, and later
    applied, in the mapping's order); ``reference_pool`` caps the distinct reference frames per identity.


    Identities are drawn with weights ~ sqrt(usable frames) through a golden-ratio sequence (even
    spread, small identities not drowned), frames of an identity through a seeded permutation
    (no frame repeats before all were used); views, effects and references from
    ``default_rng((seed, i))``. Sample ``i`` depends only on the seed, the sources and ``i``.
    """
    by_id: dict[str, list[int]] = {}
    for i, f in enumerate(files):
        by_id.setdefault(f.identity, []).append(i)
    excluded = {}
    usable: dict[str, list[tuple[int, int, int]]] = {}
    for ident, members in sorted(by_id.items()):
        frames = [(f, int(fr), k) for f in members for k, fr in enumerate(dets[f].frames)]
        if len(frames) < 2:
            excluded[ident] = f"{len(frames)} usable frame(s) (face found); need 2 (sample + DP)"
        else:
            usable[ident] = frames
    if not usable:
        msg = "no identity has two frames with a detected face; nothing to build"
        raise InputError(msg)
    if samples < 1 or not views:
        msg = f"need samples >= 1 and at least one view, got {samples} and {views}"
        raise InputError(msg)
    idents = sorted(usable)
    weights = np.sqrt([len(usable[i]) for i in idents])
    cum = np.cumsum(weights) / weights.sum()
    pools = {i: _reference_pool(files, dets, by_id[i], reference_pool) for i in idents}
    perms = {}
    for ident in idents:
        salt = zlib.crc32(ident.encode())
        perms[ident] = np.random.default_rng([seed, salt]).permutation(len(usable[ident]))
    offset = float(np.random.default_rng([seed]).random())
    picks = np.searchsorted(cum, (offset + _PHI * np.arange(samples)) % 1.0, side="right")
    seen = dict.fromkeys(idents, 0)
    names = list(effect_probs)
    plans = []
    for i, p in enumerate(picks):
        ident = idents[min(int(p), len(idents) - 1)]
        j = seen[ident]
        seen[ident] += 1
        f, frame, k = usable[ident][perms[ident][j % len(perms[ident])]]
        rng = np.random.default_rng([seed, i, 0])
        view = views[int(rng.integers(len(views)))]
        effects = tuple(n for n in names if rng.random() < effect_probs[n])
        rf, rfr = _pick_reference(pools[ident], f, frame, dets[f].n_frames, rng)
        plans.append(SamplePlan(i, f, frame, k, rf, rfr, view, effects))
    return plans, excluded


def chunk_plans(plans: list[SamplePlan], size: int) -> list[tuple[int, list[SamplePlan]]]:
    """Work units: the plans of one source file in frame order, at most ``size`` per unit.

    One unit is one sequential decode of its file, so frames are read once however many
    samples use them; the biggest units come first so the last ones balance the workers.
    """
    by_file: dict[int, list[SamplePlan]] = {}
    for p in plans:
        by_file.setdefault(p.file, []).append(p)
    out = []
    for f, ps in sorted(by_file.items()):
        ps.sort(key=lambda p: (p.frame, p.index))
        out.extend((f, ps[i:i + size]) for i in range(0, len(ps), size))
    return sorted(out, key=lambda c: -len(c[1]))


def sources_fingerprint(files: list[SourceFile], *extra: Path) -> str:
    """Hash of the source list (names, identities, splits, sizes, mtimes) and ``extra`` files'
    bytes (the calibration): a resumed build only keeps samples made from the same inputs."""
    h = hashlib.sha1()
    for path in extra:
        h.update(Path(path).read_bytes())
    for f in files:
        st = f.path.stat()
        h.update(f"{f.rel}|{f.identity}|{f.split}|{st.st_size}|{st.st_mtime_ns}\n".encode())
    return h.hexdigest()
