"""``revavatar vrface build``: the VR-Face data set generator (multiprocess, sharded, resumable).

Each sample is one source frame rendered through the simulated headset cameras (one of the
views, with seeded effects), its aligned ground-truth face and crops, and an aligned reference
(DP) frame of the same identity. The build is deterministic for a seed: everything random about
sample ``i`` comes from a generator seeded with ``(seed, i)`` only, so one worker or two give
byte-identical files, a killed build resumes by skipping complete samples, and growing
``samples`` keeps the earlier samples unchanged (the plan is prefix-stable).

Layout of ``out``: ``shards/NNNNN/IIIIIII_<field>.png|.jpg|.npy`` plus ``shards/NNNNN/index.jsonl``
(one line per complete sample, written by the parent only after the worker wrote its files),
``refs/`` (aligned references, shared by the samples that use them), ``cache/landmarks``,
``index.json`` (every sample, merged at the end), ``meta.json`` and ``contact_sheet.png``.

Scale (200k samples in < 2 h on 2 cores, ~100 KB per sample): a sample's frame-level files (ground
truth, its crops, landmarks) are written once per source frame and hard-linked by the other
samples of that frame; the three camera views of one (frame, view) are rendered once and shared
by the samples that draw that view; each worker decodes its source files once, sequentially.
Image formats (``image_format``): ``mixed`` (default) keeps the training *targets* lossless (PNG
ground truth, crops and references: they are shared, so their size is amortised) and stores the
per-sample headset *inputs* as JPEG (``jpeg_quality`` 95 vs PNG: mean PSNR 51 dB on the IR eye
views, 44 dB on the colour lower-face view, worst ~31 dB on strong colour noise, at 1/1.7 and
1/4.4 of the PNG bytes; ``benchmarks/bench_vrface.py --fidelity``); ``png`` is lossless
everywhere (the bytes of earlier builds), ``jpg`` lossy everywhere.
"""

from __future__ import annotations

import argparse
import dataclasses
import hashlib
import io
import json
import math
import os
import queue
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Final

import numpy as np

from revavatar.errors import InputError, RevAvatarError
from revavatar.vrface.sources import (
    EXPRESSIONS,
    SPLITS,
    LandmarkCache,
    SamplePlan,
    SourceFile,
    SourceLandmarks,
    atomic_write,
    check_disjoint_splits,
    chunk_plans,
    complete_entries,
    dataset_bytes,
    iter_frames,
    link_or_copy,
    merge_index,
    plan_samples,
    scan_sources,
    sources_fingerprint,
)

__all__ = [
    "FILE_FIELDS", "IMAGE_FORMATS", "BuildConfig", "BuildSummary", "FrameTruth", "add_arguments",
    "build", "camera_effects", "frame_truth", "run_from_args",
]

#: Per-sample file fields of an index entry (relative paths); ``reference`` lives in refs/.
FILE_FIELDS: Final = ("gt", "reference", "left_eye", "right_eye", "lower_face", "gt_left_eye",
                      "gt_right_eye", "gt_lower_face", "landmarks")
_CAMERAS: Final = ("left_eye", "right_eye", "lower_face")
_FRAME_FIELDS: Final = ("gt", "gt_left_eye", "gt_right_eye", "gt_lower_face", "landmarks")
_THREAD_VARS: Final = ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS")
#: image_format -> (extension of the camera views, extension of gt, crops and references)
IMAGE_FORMATS: Final = {"mixed": (".jpg", ".png"), "png": (".png", ".png"), "jpg": (".jpg", ".jpg")}


@dataclass(frozen=True)
class BuildConfig:
    """What to build; fields that change sample content enter the build key (see resume)."""

    src: Path
    headset: Path
    samples: int
    out: Path
    seed: int = 0
    workers: int = 2
    layout_size: int = 256
    shard_size: int = 1000
    cache_dir: Path | None = None  # default out/cache
    views: tuple[str, ...] = ("front", "left-60", "right-60", "top-30")
    effect_probability: float = 0.35  # chance that each registered effect is applied
    effect_probs: Mapping[str, float] = field(default_factory=dict)  # per-effect overrides
    reference_pool: int = 8  # reference frames kept per identity
    image_format: str = "mixed"  # "mixed" (PNG targets, JPEG views) | "png" | "jpg"
    png_compression: int = 1
    jpeg_quality: int = 95
    backend: str = "mediapipe"
    chunk_size: int = 0  # samples per work unit; 0 = automatic
    contact_sheet: bool = True
    head_fixed: bool = True  # headset turns with the head (see frame_truth); False: the old geometry
    stop_after: int | None = None  # test hook: stop after this many new samples (a "kill")

    def content_key(self) -> dict[str, Any]:
        """The settings a sample's bytes depend on (not workers, chunking, paths, hooks)."""
        skip = {"src", "out", "headset", "cache_dir", "workers", "chunk_size", "contact_sheet",
                "stop_after", "samples"}
        return _jsonable({k: v for k, v in asdict(self).items() if k not in skip})


@dataclass
class BuildSummary:
    """Figures of one build call."""

    out: Path
    samples: int  # samples in index.json
    written: int  # samples made by this call
    resumed: int  # complete samples found and kept
    failed: list[dict[str, Any]]
    complete: bool
    splits: dict[str, dict[str, int]]  # split -> {"samples": n, "identities": m}
    identities: int
    excluded_identities: dict[str, str]  # identity -> reason
    seconds: float
    samples_per_s: float  # of the samples written by this call
    bytes_total: int
    bytes_per_sample: float
    landmark_cache_hits: int
    landmark_cache_misses: int
    frames_detected: int
    stage_seconds: dict[str, float] = field(default_factory=dict)  # landmarks, refs, samples, ...


# ------------------------------------------------------------------------------------- workers
_W: dict[str, Any] = {}  # per-process worker state (renderer, layout, sources, ...)


def camera_effects(renderer: Any, view: str, camera: str, names: Sequence[str],
                   rng: np.random.Generator,
                   band_cache: dict[tuple[str, str], Any] | None = None,
                   ) -> tuple[list[str], dict[str, Any]]:
    """The planned effects that make sense for ``camera`` and any parameters they need fixed.

    ``ir_look`` only on infrared cameras (a colour camera stays colour); ``eyebrow_reduction``
    only on eye cameras that see the brows, at the band where the posed camera sees them (its
    other parameters drawn from ``rng``). The band depends on the posed camera only, so callers
    that make many samples pass a ``band_cache`` dict to compute it once per (view, camera).
    """
    from revavatar.vrface.effects import EyebrowParams, eyebrow_band

    cam = renderer.camera(view, camera)
    keep = [n for n in names if n != "ir_look" or cam.infrared]
    params: dict[str, Any] = {}
    if "eyebrow_reduction" in keep:
        if band_cache is not None and (view, camera) in band_cache:
            band = band_cache[(view, camera)]
        else:
            band = eyebrow_band(cam, renderer.layout, camera) if camera != "lower_face" else None
            if band_cache is not None:
                band_cache[(view, camera)] = band
        if band is None:
            keep.remove("eyebrow_reduction")
        else:
            params["eyebrow_reduction"] = dataclasses.replace(
                EyebrowParams.draw(rng), y0=band[0], y1=band[1])
    return keep, params


def _init_worker(state: dict[str, Any], out_queue: Any = None) -> None:
    import cv2

    from revavatar.core.calibration import load_calibration
    from revavatar.core.canonical import CanonicalLayout
    from revavatar.vrface.renderer import HeadsetRenderer

    from revavatar.vrface.mesh import mesh_topology

    cv2.setNumThreads(1)
    layout = CanonicalLayout(state["layout_size"])
    _W.clear()
    _W.update(state)
    _W["layout"] = layout
    _W["renderer"] = HeadsetRenderer(load_calibration(Path(state["headset"])), layout)
    _W["cache"] = LandmarkCache(Path(state["cache_dir"]), state["backend"])
    _W.update(queue=out_queue, bands={}, dirs=set())  # bands: (view, camera) -> eyebrow band
    mesh_topology()  # warm up here (imports mediapipe), not inside the first timed sample


def _encode(img: np.ndarray, ext: str) -> bytes:
    import cv2

    if ext == ".png":
        # RLE beats the default filter+deflate here in speed and size (noisy camera images)
        params = [cv2.IMWRITE_PNG_COMPRESSION, int(_W["png_compression"]),
                  cv2.IMWRITE_PNG_STRATEGY, cv2.IMWRITE_PNG_STRATEGY_RLE]
    else:
        params = [cv2.IMWRITE_JPEG_QUALITY, int(_W["jpeg_quality"])]
    ok, buf = cv2.imencode(ext, img, params)
    if not ok:
        msg = f"could not encode an image as {ext}"
        raise RevAvatarError(msg)
    return buf.tobytes()


def _sample_paths(index: int, shard_size: int, exts: tuple[str, str]) -> dict[str, str]:
    """Relative paths of sample ``index``; ``exts`` = (camera views, ground truth and crops)."""
    base = f"shards/{index // shard_size:05d}/{index:07d}_"
    paths = {n: f"{base}{n}{exts[0] if n in _CAMERAS else exts[1]}"
             for n in FILE_FIELDS if n not in ("reference", "landmarks")}
    paths["landmarks"] = f"{base}landmarks.npy"
    return paths


def _ref_path(src: SourceFile, frame: int, ext: str) -> str:
    safe = "".join(c if c.isalnum() or c in "-_" else "_" for c in src.identity)
    tag = hashlib.sha1(src.rel.encode()).hexdigest()[:6]
    return f"refs/{safe}/{Path(src.rel).stem}-{tag}_{frame:05d}{ext}"


def _worker_landmarks(fidx: int) -> SourceLandmarks:
    """Detections of file ``fidx``, the last file's kept (a file's units run back to back)."""
    last = _W.get("last_dets")
    if last is None or last[0] != fidx:
        last = (fidx, _W["cache"].get(_W["files"][fidx])[0])
        _W["last_dets"] = last
    return last[1]


def _run_refs(unit: tuple[int, list[int]]) -> int:
    """Write the aligned references of one source file (skips those already on disk)."""
    fidx, frames = unit
    src: SourceFile = _W["files"][fidx]
    out = Path(_W["out"])
    ext = _W["exts"][1]
    todo = [fr for fr in frames if not (out / _ref_path(src, fr, ext)).is_file()]
    if not todo:
        return 0
    dets = _worker_landmarks(fidx)
    where = {int(fr): k for k, fr in enumerate(dets.frames)}
    for fr, img in iter_frames(src, todo):
        aligned, _ = _W["layout"].align_face(img, dets.landmarks(where[fr]))
        path = out / _ref_path(src, fr, ext)
        path.parent.mkdir(parents=True, exist_ok=True)
        atomic_write(path, _encode(aligned, ext))
    return len(todo)


@dataclass(frozen=True)
class FrameTruth:
    """One source frame as the simulated headset sees it and as the aligners must restore it.

    Attributes:
        gt: (size, size, 3) canonical frontal face, the ground truth of every sample of the frame.
        canon: the frame's landmarks in ``gt``'s pixels (where the truth's eyes and mouth are).
        mesh: the head-frame surface the headset cameras render.
    """

    gt: np.ndarray
    canon: Any  # FaceLandmarks
    mesh: Any  # FaceMesh


#: px over which the levelled truth blends into the aligned frame outside the mesh
_TRUTH_FEATHER_PX: Final = 8.0


def frame_truth(frame: np.ndarray, lm: Any, layout: Any, head_fixed: bool = True) -> FrameTruth:
    """The mesh, ground-truth face and landmarks of one source frame.

    A headset is strapped to the head: whatever way the wearer's head turns, its cameras see the
    face from the same place. Source videos turn their heads, and a mesh lifted from a turned
    frame keeps the turn as depth. With ``head_fixed`` the mesh is levelled first (turned as
    :func:`revavatar.vrface.mesh.without_yaw` turns an enrolled face) and then placed on the
    canonical template as the 2D alignment places a frontal face, so every frame is seen from
    the calibrated camera poses; the truth is that levelled mesh seen frontally (an
    orthographic render, blended into the 2D-aligned frame outside the mesh) and the landmarks
    turn with it. Pitch is left alone, as in enrollment.

    Without it (VR-Face before 2026-12-06) the head turns in front of a fixed headset while the
    truth is the 2D-aligned frame, so the camera-to-truth mapping changed with every frame's yaw
    (the aligners' gaze error grew from ~3 deg under 4 deg of yaw to 4-7 deg above it).
    """
    import cv2

    from revavatar.vrface.mesh import FaceMesh, landmarks_to_head, level_yaw, turn_yaw
    from revavatar.vrface.renderer import render_orthographic

    aligned, m = layout.align_face(frame, lm)
    mesh = FaceMesh.from_landmarks(lm, layout, m)
    if not head_fixed:
        return FrameTruth(gt=aligned, canon=lm.transformed(m), mesh=mesh)
    yaw = level_yaw(mesh.vertices)
    head = turn_yaw(landmarks_to_head(lm, layout, m), yaw)
    # re-fit the 2D alignment to the levelled face: fitted to a turned one, its 5 points (the nose
    # tip sticks out) shift and its foreshortened eye line scales the face by 1 / cos(yaw)
    refit = layout.estimate_similarity(_head_landmarks(head, lm, layout).key_points())
    head = _similar_head(head, refit, layout)
    canon = _head_landmarks(head, lm, layout)
    mesh = dataclasses.replace(
        mesh, vertices=_similar_head(turn_yaw(mesh.vertices, yaw), refit, layout))
    render, mask = render_orthographic(frame, mesh, layout)
    inside = cv2.distanceTransform(mask.astype(np.uint8), cv2.DIST_L2, 5)
    alpha = np.clip(inside / _TRUTH_FEATHER_PX, 0.0, 1.0)[..., None]
    gt = np.rint(alpha * render + (1.0 - alpha) * aligned).astype(np.uint8)
    return FrameTruth(gt=gt, canon=canon, mesh=mesh)


def _head_landmarks(head: np.ndarray, lm: Any, layout: Any) -> Any:
    """Head-frame landmark points (N, 3) as canonical-pixel landmarks of ``lm``'s scheme."""
    from revavatar.core.landmarks import FaceLandmarks

    px = layout.head_to_pixel(head)
    return FaceLandmarks(px, np.column_stack([px, head[:, 2] / layout.mm_per_px]), lm.scheme,
                         (layout.size, layout.size), lm.score)


def _similar_head(head: np.ndarray, m: np.ndarray, layout: Any) -> np.ndarray:
    """Head-frame points moved by a canonical-pixel similarity ``m`` (depth scaled with it)."""
    a, t = np.asarray(m, np.float64)[:, :2], np.asarray(m, np.float64)[:, 2]
    px = layout.head_to_pixel(head) @ a.T + t
    return layout.pixel_to_head(px, np.asarray(head)[:, 2] * math.sqrt(abs(np.linalg.det(a))))


def _frame_state(frame: np.ndarray, lm: Any, cached: dict[str, Any]) -> None:
    """Per-frame work shared by every sample of one frame (computed on its first sample)."""
    from revavatar.core.gaze import gaze_from_landmarks
    from revavatar.vrface.mesh import head_pose_deg

    truth = frame_truth(frame, lm, _W["layout"], _W["head_fixed"])
    gaze = gaze_from_landmarks(truth.canon)
    g = {side: [round(float(v), 3) for v in gaze[side]] for side in ("left", "right")}
    cached.update(gt=truth.gt, canon=truth.canon, mesh=truth.mesh, gaze=g,
                  head_pose=[round(float(v), 3) for v in head_pose_deg(lm)], views={})


def _make_sample(plan: SamplePlan, frame: np.ndarray, lm: Any, cached: dict) -> dict[str, Any]:
    from revavatar.vrface.effects import apply_effects

    if "gt" not in cached:
        _frame_state(frame, lm, cached)
    layout, renderer = _W["layout"], _W["renderer"]
    exts, out, files = _W["exts"], Path(_W["out"]), _W["files"]
    paths = _sample_paths(plan.index, _W["shard_size"], exts)
    shard = out / paths["gt"].rsplit("/", 1)[0]
    if shard not in _W["dirs"]:
        shard.mkdir(parents=True, exist_ok=True)
        _W["dirs"].add(shard)
    if plan.view not in cached["views"]:  # one render per (frame, view), shared by its samples
        cached["views"][plan.view] = renderer.render(frame, cached["mesh"], view=plan.view)
    views = cached["views"][plan.view]
    rng = np.random.default_rng([_W["seed"], plan.index, 1])
    applied_all: list[dict[str, Any]] = []
    for cam in _CAMERAS:
        names, params = camera_effects(renderer, plan.view, cam, plan.effects, rng, _W["bands"])
        img, applied = apply_effects(views[cam], names, rng, params)
        atomic_write(out / paths[cam], _encode(img, exts[0]))
        applied_all.extend({"camera": cam, **a} for a in applied)
    if "first" not in cached:  # frame-level files: written once, hard-linked for later samples
        for name in ("gt", "gt_left_eye", "gt_right_eye", "gt_lower_face"):
            img = cached["gt"] if name == "gt" else layout.crop_region(cached["gt"], name[3:])
            atomic_write(out / paths[name], _encode(img, exts[1]))
        bio = io.BytesIO()
        np.save(bio, np.asarray(cached["canon"].points, dtype=np.float32))
        atomic_write(out / paths["landmarks"], bio.getvalue())
        cached["first"] = paths
    else:
        for name in _FRAME_FIELDS:
            link_or_copy(out / cached["first"][name], out / paths[name])
    g = cached["gaze"]
    src, ref = files[plan.file], files[plan.ref_file]
    expr = src.expression
    return {
        "index": plan.index, "key": _W["build_key"], "identity": src.identity, "split": src.split,
        "view": plan.view, "expression": expr,
        "expression_id": EXPRESSIONS.index(expr) if expr else None,
        **paths, "reference": _ref_path(ref, plan.ref_frame, exts[1]),
        "head_pose": list(cached["head_pose"]),
        "gaze": {k: list(v) for k, v in g.items()},
        "gaze_deg": [round((g["left"][i] + g["right"][i]) / 2, 3) for i in (0, 1)],
        "effects": _jsonable(applied_all),
        "source": {"file": src.rel, "frame": plan.frame},
        "reference_source": {"file": ref.rel, "frame": plan.ref_frame},
    }


def _jsonable(obj: Any) -> Any:
    if isinstance(obj, Mapping):
        return {str(k): _jsonable(v) for k, v in sorted(obj.items())}
    if isinstance(obj, (list, tuple, np.ndarray)):
        return [_jsonable(v) for v in obj]
    if isinstance(obj, (float, np.floating)):
        return round(float(obj), 5)
    return int(obj) if isinstance(obj, np.integer) else str(obj) if isinstance(obj, Path) else obj


def _run_chunk(chunk: tuple[int, list[SamplePlan]],
               emit: Callable[[dict[str, Any]], None] | None = None) -> int:
    """Make the samples of one source file in frame order (one sequential decode)."""
    import cv2

    fidx, plans = chunk
    emit = emit or _W["queue"].put
    src = _W["files"][fidx]
    dets = _worker_landmarks(fidx)
    by_frame: dict[int, list[SamplePlan]] = {}
    for p in plans:
        by_frame.setdefault(p.frame, []).append(p)
    done = 0
    for fr, img in iter_frames(src, by_frame):
        cached: dict[str, Any] = {}
        for p in by_frame[fr]:
            try:
                emit(_make_sample(p, img, dets.landmarks(p.det), cached))
            except (RevAvatarError, ValueError, cv2.error) as err:
                emit({"index": p.index, "error": f"{type(err).__name__}: {err}"})
            done += 1
    for p in plans[done:]:  # frames the decoder could not reach
        emit({"index": p.index, "error": "frame did not decode"})
    return done


def _detect_unit(fidx: int) -> tuple[int, bool, int]:
    """Landmarks of one source file into the cache: (file, cache hit, frames run through)."""
    dets, hit = _W["cache"].get(_W["files"][fidx])
    return fidx, hit, 0 if hit else dets.n_frames


# ------------------------------------------------------------------------------- orchestration
class _Executor:
    """Runs work units in this process (workers=1) or in a spawn pool that streams results.

    Spawn rather than fork: mediapipe's and OpenCV's threads do not survive a fork safely. Each
    worker builds its own renderer once in the initializer.
    """

    def __init__(self, workers: int, state: dict[str, Any]) -> None:
        self.pool = None
        self.queue = None
        if workers <= 1:
            _init_worker(state)
            return
        import multiprocessing as mp

        ctx = mp.get_context("spawn")
        self.queue = ctx.Queue()
        # one compute thread per worker: the workers already fill the cores, and BLAS/OpenMP
        # pools per worker would only oversubscribe them (children inherit the environment)
        saved = {k: os.environ.get(k) for k in _THREAD_VARS}
        os.environ.update(dict.fromkeys(_THREAD_VARS, "1"))
        try:
            self.pool = ctx.Pool(workers, initializer=_init_worker, initargs=(state, self.queue))
        finally:
            for k, v in saved.items():
                if v is None:
                    os.environ.pop(k, None)
                else:
                    os.environ[k] = v

    def map(self, fn: Callable[[Any], Any], units: list[Any]) -> list[Any]:
        if self.pool is None:
            return [fn(u) for u in units]
        return self.pool.map(fn, units, chunksize=1)

    def stream(self, chunks: list[tuple[int, list[SamplePlan]]], expected: int) -> Iterator[dict]:
        """Yield per-sample records as workers finish them (order is not deterministic)."""
        if self.pool is None:
            pending: list[dict[str, Any]] = []
            for chunk in chunks:
                _run_chunk(chunk, pending.append)
                yield from pending
                pending.clear()
            return
        results = [self.pool.apply_async(_run_chunk, (c,)) for c in chunks]
        got = 0
        while got < expected:
            try:
                rec = self.queue.get(timeout=0.5)
            except queue.Empty:
                for r in results:
                    if r.ready() and not r.successful():
                        r.get()  # re-raises the worker's exception here
                if all(r.ready() for r in results) and self.queue.empty():
                    return
                continue
            got += 1
            yield rec

    def close(self, terminate: bool = False) -> None:
        _W.clear()
        if self.pool is not None:
            (self.pool.terminate if terminate else self.pool.close)()
            self.pool.join()
            self.pool = None


def _validate(config: BuildConfig, effect_names: list[str], views: tuple[str, ...]) -> None:
    bad_views = [v for v in config.views if v not in views]
    bad_fx = sorted(set(config.effect_probs) - set(effect_names))
    checks = [
        (min(config.samples, config.workers, config.shard_size) < 1,
         "samples, workers and shard_size must be >= 1"),
        (config.image_format not in IMAGE_FORMATS,
         f"image_format must be one of {', '.join(IMAGE_FORMATS)}, got {config.image_format!r}"),
        (bool(bad_views) or not config.views, f"unknown view(s) {bad_views}; expected {views}"),
        (bool(bad_fx), f"unknown effect(s) {bad_fx}; expected some of {effect_names}"),
        (not Path(config.headset).is_file(), f"headset calibration not found: {config.headset}"),
    ]
    for failed, msg in checks:
        if failed:
            raise InputError(msg)


def build(config: BuildConfig, progress: bool = True) -> BuildSummary:
    """Build (or resume) the data set described by ``config``; see the module docstring.

    Raises:
        InputError: bad sources, calibration path or settings; no identity with two frames.
        CalibrationError: the headset YAML does not validate.
    """
    from tqdm import tqdm

    from revavatar.core.calibration import load_calibration
    from revavatar.vrface.effects import EFFECTS
    from revavatar.vrface.renderer import VIEWS

    t0 = time.perf_counter()
    effect_names = list(EFFECTS)  # registry order = application order
    _validate(config, effect_names, tuple(VIEWS))
    load_calibration(Path(config.headset))  # fail before any work
    out = Path(config.out)
    out.mkdir(parents=True, exist_ok=True)
    cache_dir = Path(config.cache_dir) if config.cache_dir else out / "cache"
    files = scan_sources(Path(config.src))
    key = hashlib.sha1(json.dumps([config.content_key(), sources_fingerprint(files, Path(config.headset))])
                       .encode()).hexdigest()[:16]
    state = {"files": files, "out": str(out), "cache_dir": str(cache_dir),
             "exts": IMAGE_FORMATS[config.image_format],
             "headset": str(config.headset), "layout_size": config.layout_size,
             "backend": config.backend, "seed": config.seed, "shard_size": config.shard_size,
             "png_compression": config.png_compression, "jpeg_quality": config.jpeg_quality,
             "head_fixed": config.head_fixed, "build_key": key}
    cache = LandmarkCache(cache_dir, config.backend)
    dets: list[SourceLandmarks | None] = [cache.load(f) for f in files]
    missing = sorted((i for i, d in enumerate(dets) if d is None),
                     key=lambda i: -files[i].path.stat().st_size)
    ex = _Executor(config.workers, state)
    terminate = True
    try:
        detected = ex.map(_detect_unit, missing) if missing else []
        frames_detected = sum(n for _, _, n in detected)
        dets = [d if d is not None else cache.load(files[i]) for i, d in enumerate(dets)]
        probs = {n: float(config.effect_probs.get(n, config.effect_probability))
                 for n in effect_names}
        plans, excluded = plan_samples(
            files, dets, samples=config.samples, seed=config.seed,  # type: ignore[arg-type]
            views=config.views, effect_probs=probs, reference_pool=config.reference_pool)
        split_of = check_disjoint_splits((files[p.file].identity, files[p.file].split) for p in plans)
        refs: dict[int, set[int]] = {}
        for p in plans:
            refs.setdefault(p.ref_file, set()).add(p.ref_frame)
        stages = {"setup_landmarks_plan": time.perf_counter() - t0}
        ex.map(_run_refs, [(f, sorted(fr)) for f, fr in sorted(refs.items())])
        stages["refs"] = time.perf_counter() - t0 - sum(stages.values())
        done = complete_entries(out, key, config.samples, FILE_FIELDS)
        todo = [p for p in plans if p.index not in done]
        # one unit per file (a unit decodes from frame 0): split only files > half a worker's share
        size = config.chunk_size or max(16, math.ceil(len(todo) / (2 * config.workers)))
        failed: list[dict[str, Any]] = []
        written = 0
        t_samples = time.perf_counter()
        bar = tqdm(total=config.samples, initial=len(done), unit="sample", desc="vrface build",
                   smoothing=0.05, disable=not progress)
        handles: dict[Path, Any] = {}
        try:
            for rec in ex.stream(chunk_plans(todo, size), len(todo)):
                bar.update(1)
                if "error" in rec:
                    failed.append(rec)
                    continue
                jl = out / rec["gt"].rsplit("/", 1)[0] / "index.jsonl"
                if jl not in handles:
                    handles[jl] = jl.open("a", encoding="utf-8")
                handles[jl].write(json.dumps(rec, separators=(",", ":")) + "\n")
                handles[jl].flush()
                written += 1
                if config.stop_after is not None and written >= config.stop_after:
                    break  # the test hook's "kill": workers are terminated mid-chunk
            else:
                terminate = False
        finally:
            bar.close()
            for fh in handles.values():
                fh.close()
        t_samples = stages["samples"] = time.perf_counter() - t_samples
    finally:
        ex.close(terminate=terminate)
    rows = merge_index(out, key, config.samples, FILE_FIELDS)
    complete = len(rows) == config.samples
    check_disjoint_splits((r["identity"], r["split"]) for r in rows)  # raises if one crosses
    splits = {s: {"samples": sum(r["split"] == s for r in rows),
                  "identities": len({r["identity"] for r in rows if r["split"] == s})}
              for s in SPLITS}
    if config.contact_sheet and rows:
        from revavatar.vrface.contact_sheet import write_build_sheet

        write_build_sheet(out / "contact_sheet.png", files, dets, plans,  # type: ignore[arg-type]
                          Path(config.headset), layout_size=config.layout_size, views=config.views,
                          seed=config.seed, head_fixed=config.head_fixed)
    nbytes = dataset_bytes(out, rows, FILE_FIELDS)
    stages["index_sheet_bytes"] = time.perf_counter() - t0 - sum(stages.values())
    summary = BuildSummary(
        out=out, samples=len(rows), written=written, resumed=len(done), failed=failed,
        complete=complete, splits=splits, identities=len(split_of),
        excluded_identities=excluded, seconds=round(time.perf_counter() - t0, 3),
        samples_per_s=round(written / t_samples, 2) if t_samples > 0 else 0.0,
        bytes_total=nbytes, bytes_per_sample=round(nbytes / max(len(rows), 1), 1),
        landmark_cache_hits=len(files) - len(missing), landmark_cache_misses=len(missing),
        frames_detected=frames_detected, stage_seconds={k: round(v, 2) for k, v in stages.items()})
    meta = {"config": _jsonable(asdict(config)), "build_key": key, "effects": effect_names,
            "expressions": list(EXPRESSIONS), "summary": _jsonable(asdict(summary))}
    atomic_write(out / "meta.json", json.dumps(meta, indent=1).encode())
    return summary


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Flags of ``revavatar vrface build`` (cheap: no heavy import here)."""
    d = BuildConfig(src=Path(), headset=Path(), samples=0, out=Path())
    parser.add_argument("--src", required=True, help="folder with MANIFEST.csv, or of videos/stills")
    parser.add_argument("--headset", required=True, help="headset calibration YAML")
    parser.add_argument("--samples", type=int, required=True, help="number of samples")
    parser.add_argument("--out", required=True, help="output folder (resumes if it has a build)")
    parser.add_argument("--seed", type=int, default=d.seed, help="plan seed (default 0)")
    parser.add_argument("--workers", type=int, default=d.workers, help="processes (default 2)")
    parser.add_argument("--layout-size", type=int, default=d.layout_size, help="canonical px")
    parser.add_argument("--shard-size", type=int, default=d.shard_size, help="samples per shard")
    parser.add_argument("--cache-dir", default=None, help="landmark cache (default OUT/cache)")
    parser.add_argument("--views", default=",".join(d.views), help="comma-separated views")
    parser.add_argument("--effect-probability", type=float, default=d.effect_probability,
                        help="chance each effect is applied (default 0.35)")
    parser.add_argument("--effect-prob", action="append", default=[], metavar="NAME=P",
                        help="per-effect probability override (repeatable)")
    parser.add_argument("--image-format", choices=tuple(IMAGE_FORMATS), default=d.image_format,
                        help="mixed: PNG targets + JPEG camera views (default); png; jpg")
    parser.add_argument("--png-compression", type=int, default=d.png_compression)
    parser.add_argument("--jpeg-quality", type=int, default=d.jpeg_quality, help="JPEG views")
    parser.add_argument("--head-fixed", action=argparse.BooleanOptionalAction, default=d.head_fixed,
                        help="headset turns with the head (default); --no-head-fixed: the head turns"
                             " in front of a fixed headset (VR-Face's geometry before 2026-12-06)")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")


def run_from_args(args: argparse.Namespace) -> BuildSummary:
    """Build from parsed CLI arguments and print the summary as JSON."""
    probs = {}
    for item in args.effect_prob:
        name, _, val = item.partition("=")
        try:
            probs[name] = float(val)
        except ValueError as err:
            msg = f"--effect-prob expects NAME=P, got {item!r}"
            raise InputError(msg) from err
    config = BuildConfig(
        src=Path(args.src), headset=Path(args.headset), samples=args.samples, out=Path(args.out),
        seed=args.seed, workers=args.workers, layout_size=args.layout_size,
        shard_size=args.shard_size, cache_dir=Path(args.cache_dir) if args.cache_dir else None,
        views=tuple(v.strip() for v in args.views.split(",") if v.strip()),
        effect_probability=args.effect_probability, effect_probs=probs,
        image_format=args.image_format, png_compression=args.png_compression,
        jpeg_quality=args.jpeg_quality, head_fixed=args.head_fixed,
    )
    summary = build(config, progress=not args.no_progress)
    report = {**_jsonable(asdict(summary)), "failed": len(summary.failed)}
    print(json.dumps(report, indent=1))
    return summary
