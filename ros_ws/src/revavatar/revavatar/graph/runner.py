"""Embedded runner: the node graph of the description, without ROS.

Each node of :func:`revavatar.graph.description.headset_graph` runs its pure stage on its own
worker thread, with one keep-last queue per subscription like a ROS 2 subscription with
``KEEP_LAST`` history: when a queue is full its oldest message is dropped and counted as a drop of
the subscribing node. That makes real-time replay (``rate=1``) behave like the headset does under
load. With ``rate=0`` the bag is replayed as fast as possible and publishers *block* on a full
queue instead, so an offline run is lossless and its output does not depend on machine speed.

Per node the runner measures processing time per message (p50/p99), frames and drops; end to end
it measures the wall time from a camera frame entering the graph to the restored face that
includes it. :func:`run_session` is what ``revavatar run`` and the demo call.
"""

from __future__ import annotations

import itertools
import logging
import queue
import shutil
import threading
import time
from collections import deque
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final

import numpy as np

from revavatar.graph.description import (
    DEFAULT_QUEUE_DEPTH,
    DEFAULT_SLOP_MS,
    GROUND_TRUTH_TOPIC,
    GraphSpec,
    NodeSpec,
    headset_graph,
)
from revavatar.graph.stages import Stage, build_stage
from revavatar.graph.sync import header_stamp_ns

__all__ = ["SOURCE_PORT", "GraphRunner", "NodeStats", "run_session"]

log = logging.getLogger(__name__)

#: input port of ingestion nodes through which playback feeds camera frames
SOURCE_PORT: Final = "frame"
RESTORED_TOPIC: Final = "/revavatar/face/restored"
DISPLAY_TOPIC: Final = "/revavatar/display/image"


@dataclass
class NodeStats:
    """Measured figures of one node: processing time (s), frames, queue drops.

    Latency is recorded only for calls that published something: a synchronizing node's calls
    that merely queue one input of a set cost microseconds and would hide the real work (the
    restore of a matched set) under a meaningless median. ``frames`` counts every input message.
    """

    frames: int = 0
    drops: int = 0
    published: int = 0
    latencies_s: list[float] = field(default_factory=list)

    def summary(self) -> dict[str, Any]:
        """``{"p50_ms", "p99_ms", "frames", "drops", "published"}``."""
        lat = np.asarray(self.latencies_s, dtype=np.float64) * 1e3
        p50, p99 = (float(np.percentile(lat, q)) if lat.size else 0.0 for q in (50, 99))
        return {"p50_ms": round(p50, 3), "p99_ms": round(p99, 3), "frames": self.frames,
                "drops": self.drops, "published": self.published}


class _Worker:
    """One node: its stage, keep-last queues per input port, and the thread that drains them."""

    def __init__(self, spec: NodeSpec, stage: Stage, runner: GraphRunner) -> None:
        self.spec = spec
        self.stage = stage
        self.runner = runner
        self.depth = int(spec.parameters.get("queue_depth", DEFAULT_QUEUE_DEPTH))
        ports = list(spec.inputs) + ([SOURCE_PORT] if spec.stage == "ingestion" else [])
        self.queues: dict[str, deque[tuple[int, Any]]] = {p: deque() for p in ports}
        self.cond = threading.Condition()
        self.stats = NodeStats()
        self.thread = threading.Thread(target=self._loop, name=f"node:{spec.name}", daemon=True)

    def put(self, port: str, msg: Any, *, block: bool) -> None:
        """Enqueue; on a full queue drop the oldest (counted) or, when ``block``, wait for room."""
        runner = self.runner
        with self.cond:
            q = self.queues[port]
            while block and len(q) >= self.depth and not runner.stopping:
                self.cond.wait(0.05)
            if runner.stopping:
                return
            runner.begin()
            if len(q) >= self.depth:
                q.popleft()
                self.stats.drops += 1
                runner.done()
            q.append((next(runner.seq), msg))
            self.cond.notify_all()

    def _next(self) -> tuple[str, Any] | None:
        with self.cond:
            while not self.runner.stopping and not any(self.queues.values()):
                self.cond.wait(0.1)
            if self.runner.stopping:
                return None
            port = min((q[0][0], p) for p, q in self.queues.items() if q)[1]
            _, msg = self.queues[port].popleft()
            self.cond.notify_all()
            return port, msg

    def _loop(self) -> None:
        clock = time.perf_counter
        while (item := self._next()) is not None:
            port, msg = item
            try:
                t0 = clock()
                outputs = self.stage.process(port, msg)
                if outputs:
                    self.stats.latencies_s.append(clock() - t0)
                self.stats.frames += 1
                for out_port, out_msg in outputs:
                    self.stats.published += 1
                    self.runner.publish(self.spec, out_port, out_msg)
            except BaseException as err:  # noqa: BLE001 - handed to run(), which re-raises it
                self.runner.fail(err, self.spec.name)
                return
            finally:
                self.runner.done()


class GraphRunner:
    """Run a GraphSpec on threads, replaying camera frames from any ``(topic, ts_ns, msg)`` source.

    Args:
        spec: the graph (normally :func:`headset_graph`).
        rate: playback rate by header stamps (1 = real time, 2 = twice as fast, 0 = as fast as
            possible and lossless); default: the ingestion nodes' ``rate`` parameter.
        stages: node name -> stage to use instead of building it (tests, custom graphs).
        stage_factory: ``(stage kind, node name, parameters) -> Stage`` for the other nodes.

    Raises:
        ValueError: a negative rate, or two nodes publishing the same topic.
    """

    def __init__(
        self,
        spec: GraphSpec,
        *,
        rate: float | None = None,
        stages: Mapping[str, Stage] | None = None,
        stage_factory: Callable[[str, str, Mapping[str, Any]], Stage] = build_stage,
    ) -> None:
        if rate is None:
            rates = {float(n.parameters.get("rate", 1.0))
                     for n in spec.nodes if n.stage == "ingestion"}
            rate = rates.pop() if len(rates) == 1 else 1.0
        if rate < 0:
            msg = f"rate must be >= 0 (0 = as fast as possible), got {rate}"
            raise ValueError(msg)
        self.spec = spec
        self.rate = float(rate)
        self.lossless = self.rate == 0
        self._given = dict(stages or {})
        self._factory = stage_factory
        self._publisher: dict[str, str] = {}
        self._subscribers: dict[str, list[tuple[str, str]]] = {}
        for node in spec.nodes:
            for topic in node.outputs.values():
                if topic in self._publisher:
                    msg = f"{topic} is published by both {self._publisher[topic]} and {node.name}"
                    raise ValueError(msg)
                self._publisher[topic] = node.name
            for port, topic in node.inputs.items():
                self._subscribers.setdefault(topic, []).append((node.name, port))
        self._taps: dict[str, list[Callable[[str, Any], None]]] = {}
        self._workers: dict[str, _Worker] = {}
        self.seq = itertools.count()
        self.stopping = False
        self._inflight = 0
        self._idle = threading.Condition()
        self._error: tuple[BaseException, str] | None = None
        self._tap_queue: queue.Queue[tuple[str, Any] | None] = queue.Queue()
        self._inject: dict[int, float] = {}
        self.e2e_topic = RESTORED_TOPIC
        self.e2e_latencies_s: list[float] = []
        self.wall_s = 0.0
        self.frames_in = 0

    # -- wiring -------------------------------------------------------------------------------
    def wiring(self) -> set[tuple[str, str, str]]:
        """(publisher node, topic, subscriber node) edges the runner delivers along."""
        return {(self._publisher[t], t, sub) for t, subs in self._subscribers.items()
                if t in self._publisher for sub, _ in subs}

    def subscribe(self, topic: str, callback: Callable[[str, Any], None]) -> None:
        """Call ``callback(topic, msg)`` for every message published on ``topic``.

        Callbacks run in order on one tap thread (never on a node's thread, so recording or video
        writing does not distort node latencies), and :meth:`run` waits for them to finish.
        """
        self._taps.setdefault(topic, []).append(callback)

    def record(self, writer: Any, topics: Iterable[str] | None = None) -> list[str]:
        """Record ``topics`` (default: every topic of the graph) to an open SessionWriter.

        Returns:
            The recorded topics, sorted.
        """
        chosen = sorted(self.spec.topics() if topics is None else set(topics))
        unknown = sorted(set(chosen) - self.spec.topics())
        if unknown:
            msg = f"cannot record {', '.join(unknown)}: not a topic of the graph"
            raise ValueError(msg)
        for topic in chosen:
            self.subscribe(topic, writer.write)
        return chosen

    # -- plumbing used by the workers ---------------------------------------------------------
    def begin(self) -> None:
        """One more message in flight."""
        with self._idle:
            self._inflight += 1

    def done(self) -> None:
        """One message handled or dropped."""
        with self._idle:
            self._inflight -= 1
            if self._inflight == 0:
                self._idle.notify_all()

    def fail(self, err: BaseException, node: str) -> None:
        """Stop the graph after an unexpected error in ``node`` (re-raised by :meth:`run`)."""
        if self._error is None:
            self._error = (err, node)
        self.stopping = True
        with self._idle:
            self._idle.notify_all()

    def publish(self, spec: NodeSpec, port: str, msg: Any) -> None:
        """Deliver ``msg`` from ``spec``'s output ``port`` to its subscribers and taps."""
        topic = spec.outputs[port]
        if topic == self.e2e_topic:
            wall = self._inject.pop(header_stamp_ns(msg), None)
            if wall is not None:
                self.e2e_latencies_s.append(time.perf_counter() - wall)
        for sub, sub_port in self._subscribers.get(topic, ()):
            self._workers[sub].put(sub_port, msg, block=self.lossless)
        if topic in self._taps:
            self._tap_queue.put((topic, msg))

    def _tap_loop(self) -> None:
        while (item := self._tap_queue.get()) is not None:
            topic, msg = item
            try:
                for callback in self._taps[topic]:
                    callback(topic, msg)
            except BaseException as err:  # noqa: BLE001 - handed to run()
                self.fail(err, f"subscriber of {topic}")

    # -- running ------------------------------------------------------------------------------
    @property
    def stages(self) -> dict[str, Stage]:
        """Node name -> its stage (built by :meth:`build`)."""
        return {name: w.stage for name, w in self._workers.items()}

    def build(self) -> None:
        """Build every node's stage (loads calibration, profile, ...) unless already built."""
        if self._workers:
            return
        for node in self.spec.nodes:
            stage = self._given.get(node.name)
            if stage is None:
                stage = self._factory(node.stage, node.name, node.parameters)
            self._workers[node.name] = _Worker(node, stage, self)
        self._sources = {w.spec.outputs["image_raw"]: w for w in self._workers.values()
                         if w.spec.stage == "ingestion" and "image_raw" in w.spec.outputs}

    def run(self, source: Iterable[tuple[str, int, Any]], progress: Any = None) -> dict[str, Any]:
        """Replay ``source`` through the graph until every message is processed.

        Args:
            source: ``(topic, ts_ns, msg)`` in time order, e.g. ``SessionReader.messages()``;
                messages on a camera node's ``image_raw`` topic are fed to that node.
            progress: object with ``update(n)`` (a tqdm bar), or None.

        Returns:
            :meth:`report`.

        Raises:
            Exception: whatever a stage or tap raised unexpectedly (the graph is stopped first).
        """
        self.build()
        self.stopping = False
        tap_thread = threading.Thread(target=self._tap_loop, name="taps", daemon=True)
        tap_thread.start()
        for w in self._workers.values():
            w.thread.start()
        started = time.perf_counter()
        try:
            self._play(source, progress)
            with self._idle:
                while self._inflight > 0 and self._error is None:
                    self._idle.wait(0.1)
        finally:
            self.wall_s = time.perf_counter() - started
            self.stopping = True
            for w in self._workers.values():
                with w.cond:
                    w.cond.notify_all()
                w.thread.join()
            self._tap_queue.put(None)
            tap_thread.join()
        if self._error is not None:
            err, node = self._error
            log.error("node %s failed: %s", node, err)
            raise err
        return self.report()

    def _play(self, source: Iterable[tuple[str, int, Any]], progress: Any) -> None:
        clock = time.perf_counter
        t0 = s0 = None
        for topic, ts_ns, msg in source:
            if self._error is not None:
                return
            worker = self._sources.get(topic)
            if worker is None:
                continue
            stamp = header_stamp_ns(msg) if hasattr(msg, "header") else int(ts_ns)
            if self.rate > 0:
                if s0 is None:
                    t0, s0 = clock(), stamp
                delay = t0 + (stamp - s0) / 1e9 / self.rate - clock()
                if delay > 0:
                    time.sleep(delay)
            self._inject[stamp] = clock()
            worker.put(SOURCE_PORT, msg, block=self.lossless)
            self.frames_in += 1
            if progress is not None:
                progress.update(1)

    def report(self) -> dict[str, Any]:
        """Per-node figures, methods, end-to-end latency and throughput of the last run."""
        nodes: dict[str, Any] = {}
        methods: dict[str, str] = {}
        for name, w in self._workers.items():
            fig = w.stats.summary()
            stage_stats = getattr(w.stage, "stats", None)
            fig["bad_frames"] = int(getattr(stage_stats, "bad_frames", 0))
            sync = getattr(w.stage, "sync", None)
            if sync is not None:
                fig["sync_dropped"] = sync.stats.dropped
            nodes[name] = fig
            methods.setdefault(w.spec.stage, str(getattr(w.stage, "method", "")))
        methods["avatar"] = "not implemented"
        e2e = np.asarray(self.e2e_latencies_s) * 1e3
        restored = len(self.e2e_latencies_s)
        return {
            "nodes": nodes,
            "methods": methods,
            "end_to_end": {
                "topic": self.e2e_topic,
                "p50_ms": round(float(np.percentile(e2e, 50)), 3) if e2e.size else 0.0,
                "p99_ms": round(float(np.percentile(e2e, 99)), 3) if e2e.size else 0.0,
                "frames": restored,
            },
            "rate": self.rate,
            "wall_s": round(self.wall_s, 3),
            "frames_in": self.frames_in,
            "output_fps": round(restored / self.wall_s, 2) if self.wall_s > 0 else 0.0,
        }


def _session_fps(reader: Any, topic: str, fallback: float) -> float:
    stamps = []
    for _, _, msg in reader.messages([topic]):
        stamps.append(header_stamp_ns(msg))
        if len(stamps) >= 31:
            break
    diffs = np.diff(np.asarray(stamps, dtype=np.int64))
    diffs = diffs[diffs > 0]
    return float(1e9 / np.median(diffs)) if diffs.size else float(fallback)


def _copy_bag(bag: Path, dest: Path) -> None:
    if dest.exists():
        shutil.rmtree(dest)
    if bag.is_dir():
        shutil.copytree(bag, dest)
    else:
        dest.mkdir(parents=True)
        shutil.copy2(bag, dest / bag.name)


class _Metrics:
    """Running SSIM/PSNR and flicker of restored faces against the stamp-matched ground truth."""

    def __init__(self, bag: Path, layout: Any, slop_ns: int) -> None:
        from revavatar.bag import SessionReader  # noqa: PLC0415
        from revavatar.core.metrics import FlickerMeter  # noqa: PLC0415

        self._flicker = FlickerMeter({"full": None, "eye": layout.region("eye_band").box_px})

        self._reader = SessionReader(bag)
        self._reader.open()
        self._gt = iter(self._reader.messages([GROUND_TRUTH_TOPIC]))
        self._ahead: tuple[int, Any] | None = None
        self._layout = layout
        self._slop = slop_ns
        self.values: list[dict[str, dict[str, float]]] = []
        self.unmatched = 0

    def _advance(self, stamp: int) -> Any | None:
        best = None
        while True:
            if self._ahead is None:
                nxt = next(self._gt, None)
                if nxt is None:
                    return best
                self._ahead = (header_stamp_ns(nxt[2]), nxt[2])
            s, msg = self._ahead
            if s > stamp + self._slop:
                return best
            self._ahead = None
            if abs(s - stamp) <= self._slop:
                best = msg

    def add(self, stamp: int, restored: np.ndarray) -> None:
        import cv2  # noqa: PLC0415

        from revavatar.core.messages import image_to_bgr  # noqa: PLC0415
        from revavatar.core.metrics import region_metrics  # noqa: PLC0415

        gt_msg = self._advance(stamp)
        if gt_msg is None:
            self.unmatched += 1
            return
        gt = image_to_bgr(gt_msg)
        if gt.shape[:2] != restored.shape[:2]:
            gt = cv2.resize(gt, restored.shape[1::-1], interpolation=cv2.INTER_AREA)
        self.values.append(region_metrics(restored, gt, self._layout))
        self._flicker.add(restored, gt)

    def summary(self) -> dict[str, Any]:
        self._reader.close()
        out: dict[str, Any] = {"frames": len(self.values), "unmatched": self.unmatched}
        for region in self.values[0] if self.values else ():
            out[region] = {
                k: round(float(np.mean([v[region][k] for v in self.values])), 4)
                for k in self.values[0][region]
            }
        flicker = self._flicker.summary()
        if flicker:  # output change minus truth change, 8-bit units: > 0 flickers, < 0 steadier
            out["flicker"] = {k: round(v, 3) for k, v in flicker.items()}
            out["truth_change"] = {k: round(v, 3) for k, v in self._flicker.truth_change().items()}
        return out


class _Sinks:
    """restored.mp4 and display.mp4 (mp4v at the session fps) and the metrics, fed by taps."""

    def __init__(self, out: Path, fps: float, face_size: int, display_size: Any,
                 metrics: _Metrics | None) -> None:
        import cv2  # noqa: PLC0415

        fourcc = cv2.VideoWriter_fourcc(*"mp4v")
        self.restored = cv2.VideoWriter(str(out / "restored.mp4"), fourcc, fps, (face_size,) * 2)
        self.display = cv2.VideoWriter(str(out / "display.mp4"), fourcc, fps,
                                       tuple(int(v) for v in display_size))
        self.metrics = metrics

    def attach(self, runner: GraphRunner) -> None:
        runner.subscribe(RESTORED_TOPIC, self._on_restored)
        runner.subscribe(DISPLAY_TOPIC, self._on_display)

    def _on_restored(self, _: str, msg: Any) -> None:
        from revavatar.core.messages import image_to_bgr  # noqa: PLC0415

        face = image_to_bgr(msg)
        self.restored.write(face)
        if self.metrics is not None:
            self.metrics.add(header_stamp_ns(msg), face)

    def _on_display(self, _: str, msg: Any) -> None:
        from revavatar.core.messages import image_to_bgr  # noqa: PLC0415

        self.display.write(image_to_bgr(msg))

    def close(self) -> None:
        self.restored.release()
        self.display.release()


def run_session(
    calibration_path: str | Path,
    bag_path: str | Path,
    profile_dir: str | Path | None,
    out_dir: str | Path,
    rate: float = 1.0,
    record: str | Path | None = None,
    progress: bool = True,  # noqa: FBT001, FBT002 - contract signature
    *,
    queue_depth: int = DEFAULT_QUEUE_DEPTH,
    slop_ms: float = DEFAULT_SLOP_MS,
    layout_size: int | None = None,
    aligner: str = "homography",
    restorer: str = "paste+poisson",
) -> dict[str, Any]:
    """Replay a session bag through the headset graph and write the results.

    Writes ``out_dir/session/`` (copy of the replayed bag), ``restored.mp4`` (restored faces) and
    ``display.mp4`` (mp4v at the session fps), and ``report.json``: per-node ``p50_ms``, ``p99_ms``,
    ``frames``, ``drops``; ``methods`` per stage; ``metrics`` (SSIM/PSNR, full face and eye region;
    ``flicker``: output minus truth frame-to-frame change, and ``truth_change``) against
    ``/revavatar/ground_truth/face`` when the bag has it, else ``{}`` and a ``metrics_note``.

    Args:
        calibration_path: headset calibration YAML.
        bag_path: session bag.
        profile_dir: enrollment profile directory.
        out_dir: output directory (created).
        rate: 1 = real time, 2 = twice as fast, 0 = as fast as possible (lossless).
        record: also record every topic of the graph to this new bag.
        progress: show a tqdm bar.
        queue_depth, slop_ms: graph parameters (see docs/nodes.md).
        layout_size: canonical face size; default the profile's.
        aligner: key of ``ALIGNERS`` run by the alignment nodes (trained ones need models/).
        restorer: key of ``RESTORERS`` run by the restoration node.

    Returns:
        The report (also written to ``report.json``).

    Raises:
        BagError: the bag is unreadable or does not fit the calibration (validate_session).
        CalibrationError, InputError: a bad calibration or a missing profile.
    """
    import json  # noqa: PLC0415

    from tqdm import tqdm  # noqa: PLC0415

    from revavatar.bag import (  # noqa: PLC0415
        SessionReader,
        SessionWriter,
        image_topic,
        validate_session,
    )
    from revavatar.core.calibration import CAMERA_NAMES, load_calibration  # noqa: PLC0415
    from revavatar.core.canonical import CanonicalLayout  # noqa: PLC0415

    bag, out = Path(bag_path), Path(out_dir)
    calibration = load_calibration(calibration_path)
    with SessionReader(bag) as reader:
        validate_session(reader, calibration)
        has_truth = GROUND_TRUTH_TOPIC in reader.topics()
        counts = reader.message_counts
        fps = _session_fps(reader, image_topic("lower_face"), calibration.camera("lower_face").fps)
    if layout_size is None and profile_dir:
        from revavatar.core.enrollment import Profile  # noqa: PLC0415

        layout_size = int(Profile.load(Path(profile_dir)).layout_size)
    layout = CanonicalLayout(layout_size or 256)
    spec = headset_graph(calibration_path, profile_dir, queue_depth=queue_depth, slop_ms=slop_ms,
                         session=bag, rate=rate, layout_size=layout.size, aligner=aligner,
                         restorer=restorer)
    runner = GraphRunner(spec)
    runner.build()  # fail on a bad profile before writing anything

    out.mkdir(parents=True, exist_ok=True)
    _copy_bag(bag, out / "session")
    metrics = _Metrics(bag, layout, round(slop_ms * 1e6)) if has_truth else None
    sinks = _Sinks(out, fps, layout.size, calibration.display.resolution, metrics)
    sinks.attach(runner)
    total = sum(counts.get(image_topic(cam), 0) for cam in CAMERA_NAMES)
    writer = SessionWriter(record) if record is not None else None
    try:
        if writer is not None:
            writer.open()
            runner.record(writer)
        with SessionReader(bag) as reader, tqdm(total=total, disable=not progress,
                                                unit="frame", desc="replay") as bar:
            report = runner.run(reader.messages([image_topic(c) for c in CAMERA_NAMES]), bar)
    finally:
        sinks.close()
        if writer is not None:
            writer.close()
    if metrics is not None:
        report["metrics"] = metrics.summary()
    else:
        report["metrics"] = {}
        report["metrics_note"] = f"no {GROUND_TRUTH_TOPIC} in the bag: nothing to compare against"
    report["session"] = {"bag": str(bag), "fps": round(fps, 3), "messages": counts,
                         "calibration": calibration.name}
    report["outputs"] = {"session": str(out / "session"), "restored": str(out / "restored.mp4"),
                         "display": str(out / "display.mp4"),
                         "record": str(record) if record is not None else None}
    (out / "report.json").write_text(json.dumps(report, indent=1))
    return report
