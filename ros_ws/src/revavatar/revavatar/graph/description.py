"""THE description of the RevAvatar node graph: nodes, topics, parameters.

Both ``launch/headset.launch.py`` (ROS 2) and :class:`revavatar.graph.runner.GraphRunner` (no ROS)
build their graph from :func:`headset_graph`, so the two can never wire differently; a test
executes the launch file against fake launch modules and compares its edges with the runner's.

Nodes use *relative* topic names (their ports, e.g. ``image_raw``), image_pipeline style, and the
description maps each port to the absolute topic it is remapped to. Parameters are described once
here (:class:`ParamSpec`: type, default, meaning, range) and turned into ROS parameter descriptors
by :mod:`revavatar.ros`, into launch parameters by the launch file, and into ``docs/nodes.md`` by
:func:`render_nodes_doc`.

There is no avatar node yet: the avatar stage (a learned 3D face driven by the restored face) does
not exist in this release, so the graph ends at the display; reports list it as "not implemented".
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final

__all__ = [
    "CAMERA_NAMES",
    "DEFAULT_LAYOUT_SIZE",
    "DEFAULT_QUEUE_DEPTH",
    "DEFAULT_RATE",
    "DEFAULT_SLOP_MS",
    "GROUND_TRUTH_TOPIC",
    "STAGE_KINDS",
    "GraphSpec",
    "NodeSpec",
    "ParamSpec",
    "PortSpec",
    "StageKind",
    "headset_graph",
    "render_nodes_doc",
    "wiring_of",
]

#: the headset cameras, in the order of revavatar.core.calibration.CAMERA_NAMES
CAMERA_NAMES: Final = ("left_eye", "right_eye", "lower_face")
DEFAULT_QUEUE_DEPTH: Final = 5
DEFAULT_SLOP_MS: Final = 20.0
DEFAULT_RATE: Final = 1.0
DEFAULT_LAYOUT_SIZE: Final = 256
#: aligned true face of simulated sessions; not part of the graph, read by the runner for metrics
GROUND_TRUTH_TOPIC: Final = "/revavatar/ground_truth/face"

_PY_TYPES: Final[dict[str, tuple[type, ...]]] = {
    "string": (str,),
    "integer": (int,),
    "double": (float, int),
    "bool": (bool,),
}


@dataclass(frozen=True)
class ParamSpec:
    """One node parameter, declared with a descriptor (type, meaning, range) before any topic.

    Attributes:
        name: parameter name.
        type: ``"string" | "integer" | "double" | "bool"`` (ROS parameter types).
        default: value used when neither launch nor the runner sets it.
        description: what it means (goes into the ROS descriptor and docs/nodes.md).
        range: inclusive (min, max) for numbers, or None.
        choices: the allowed values, or None.
        read_only: cannot change after start (paths, models): the node rejects live changes.
    """

    name: str
    type: str
    default: Any
    description: str
    range: tuple[float, float] | None = None
    choices: tuple[Any, ...] | None = None
    read_only: bool = True

    def validate(self, value: Any) -> str | None:
        """Why ``value`` is not acceptable for this parameter, or None when it is."""
        kinds = _PY_TYPES[self.type]
        if (isinstance(value, bool) and self.type != "bool") or not isinstance(value, kinds):
            return f"{self.name}: expected {self.type}, got {value!r}"
        if self.range is not None and not self.range[0] <= value <= self.range[1]:
            return f"{self.name}: {value!r} outside [{self.range[0]}, {self.range[1]}]"
        if self.choices is not None and value not in self.choices:
            return f"{self.name}: {value!r} is not one of {', '.join(map(str, self.choices))}"
        return None

    def doc_line(self, default: Any | None = None) -> str:
        """``**name** (type, default: X): meaning, range`` as in image_pipeline's docs."""
        shown = self.default if default is None else default
        line = f"**{self.name}** ({self.type}, default: {_fmt(shown)}): {self.description}"
        if self.range is not None:
            line += f", range [{_fmt(self.range[0])}, {_fmt(self.range[1])}]"
        if self.choices is not None:
            line += f", one of {', '.join(_fmt(c) for c in self.choices)}"
        return line + ("; read-only" if self.read_only else "")


@dataclass(frozen=True)
class PortSpec:
    """A topic a stage publishes or subscribes under its relative name."""

    msg_type: str
    description: str


@dataclass(frozen=True)
class StageKind:
    """What an executable is: its ports and parameters (shared by all its node instances)."""

    stage: str
    executable: str
    summary: str
    inputs: Mapping[str, PortSpec]
    outputs: Mapping[str, PortSpec]
    parameters: tuple[ParamSpec, ...]

    def param(self, name: str) -> ParamSpec:
        """The ParamSpec called ``name``.

        Raises:
            KeyError: unknown parameter (the message lists the known ones).
        """
        for p in self.parameters:
            if p.name == name:
                return p
        msg = f"{self.executable} has no parameter {name!r}; it has {', '.join(self.names())}"
        raise KeyError(msg)

    def names(self) -> tuple[str, ...]:
        """Parameter names in declaration order."""
        return tuple(p.name for p in self.parameters)


@dataclass(frozen=True)
class NodeSpec:
    """One node of the graph.

    Attributes:
        name: node name (unique in the graph).
        executable: console script (``camera_node`` ...) that runs it under ROS 2.
        stage: key of :data:`STAGE_KINDS` (``ingestion | alignment | restoration | display``).
        inputs: port (relative topic) -> absolute topic it subscribes.
        outputs: port (relative topic) -> absolute topic it publishes.
        parameters: parameter values (every parameter of the stage kind, typed).
    """

    name: str
    executable: str
    stage: str
    inputs: Mapping[str, str]
    outputs: Mapping[str, str]
    parameters: Mapping[str, Any] = field(default_factory=dict)

    @property
    def kind(self) -> StageKind:
        """The StageKind of this node."""
        return STAGE_KINDS[self.stage]

    def remappings(self) -> list[tuple[str, str]]:
        """(relative, absolute) topic remappings for launch, inputs then outputs."""
        return [*self.inputs.items(), *self.outputs.items()]


@dataclass(frozen=True)
class GraphSpec:
    """The whole graph: nodes in topological order (sources first)."""

    nodes: tuple[NodeSpec, ...]

    def node(self, name: str) -> NodeSpec:
        """The node called ``name``.

        Raises:
            KeyError: no such node.
        """
        for n in self.nodes:
            if n.name == name:
                return n
        msg = f"no node {name!r}; nodes: {', '.join(n.name for n in self.nodes)}"
        raise KeyError(msg)

    def topics(self) -> set[str]:
        """Every topic published or subscribed by a node."""
        return {t for n in self.nodes for t in (*n.inputs.values(), *n.outputs.values())}


def _fmt(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str):
        return f'"{value}"'
    return str(value)


_IMAGE: Final = "sensor_msgs/msg/Image"
_INFO: Final = "sensor_msgs/msg/CameraInfo"

_QUEUE = ParamSpec(
    "queue_depth", "integer", DEFAULT_QUEUE_DEPTH,
    "keep-last depth of each subscription (and publisher QoS); when full the oldest message is "
    "dropped and counted", range=(1, 100),
)
_LAYOUT = ParamSpec(
    "layout_size", "integer", DEFAULT_LAYOUT_SIZE,
    "canonical face size in px (aligned crops scale with it)", choices=(128, 256, 512, 1024),
)
_CALIB = ParamSpec("calibration", "string", "", "headset calibration YAML (cameras, display)")
_CAMERA = ParamSpec(
    "camera", "string", "left_eye", "headset camera this node serves", choices=CAMERA_NAMES
)

#: stage -> its executable, ports and parameters; the one table docs, launch and runner share.
STAGE_KINDS: Final[dict[str, StageKind]] = {
    "ingestion": StageKind(
        stage="ingestion",
        executable="camera_node",
        summary="Publishes one headset camera's frames (from a session bag) with its calibration "
        "as CameraInfo; checks each frame's encoding and size against the calibration.",
        inputs={},
        outputs={
            "image_raw": PortSpec(_IMAGE, "camera frames, mono8 for IR cameras else bgr8"),
            "camera_info": PortSpec(_INFO, "calibration of the camera at each frame's stamp"),
        },
        parameters=(
            _CAMERA,
            _CALIB,
            ParamSpec("source", "string", "", "session bag (rosbag2 directory) to publish from"),
            ParamSpec(
                "rate", "double", DEFAULT_RATE,
                "playback rate by header stamps (1 = real time, 0 = as fast as possible)",
                range=(0.0, 100.0),
            ),
            _QUEUE,
        ),
    ),
    "alignment": StageKind(
        stage="alignment",
        executable="alignment_node",
        summary="Rectifies a camera image into its canonical face region (aligned crop).",
        inputs={"image_raw": PortSpec(_IMAGE, "raw frames of the camera")},
        outputs={"aligned": PortSpec(_IMAGE, "canonical crop of the region (gray if input gray)")},
        parameters=(
            _CAMERA,
            _CALIB,
            ParamSpec(
                "method", "string", "homography",
                "aligner (key of revavatar.graph.stages.ALIGNERS; deocclusion+<key>: the eye "
                "cameras' frames go through the trained de-occluder first)",
            ),
            ParamSpec("profile", "string", "",
                      "enrollment profile directory; read by the 'surface' aligner and by "
                      "learned aligners that need the wearer (surface input, DP reference)"),
            _LAYOUT,
            _QUEUE,
        ),
    ),
    "restoration": StageKind(
        stage="restoration",
        executable="restoration_node",
        summary="Synchronizes the three aligned crops by header stamp (approximate time) and "
        "restores the full face onto the enrollment DP.",
        inputs={
            f"{cam}/aligned": PortSpec(_IMAGE, f"aligned {cam.replace('_', ' ')} crop")
            for cam in CAMERA_NAMES
        },
        outputs={
            "composite": PortSpec(_IMAGE, "crops pasted onto the DP (before blending), bgr8"),
            "restored": PortSpec(_IMAGE, "restored canonical face, bgr8"),
        },
        parameters=(
            _CALIB,
            ParamSpec("profile", "string", "", "enrollment profile directory (dp.png, ...)"),
            ParamSpec(
                "method", "string", "paste+poisson",
                "restorer (key of revavatar.graph.stages.RESTORERS)",
            ),
            _LAYOUT,
            _QUEUE,
            ParamSpec(
                "slop_ms", "double", DEFAULT_SLOP_MS,
                "largest stamp spread (ms) of a synchronized crop set", range=(0.0, 1000.0),
                read_only=False,
            ),
        ),
    ),
    "display": StageKind(
        stage="display",
        executable="display_node",
        summary="Warps the restored face onto the outward display so an observer sees the eyes "
        "where they are.",
        inputs={"restored": PortSpec(_IMAGE, "restored canonical face")},
        outputs={"image": PortSpec(_IMAGE, "display image at the display resolution, bgr8")},
        parameters=(_CALIB, _LAYOUT, _QUEUE),
    ),
}


def _node(name: str, stage: str, inputs: dict[str, str], outputs: dict[str, str],
          values: dict[str, Any]) -> NodeSpec:
    kind = STAGE_KINDS[stage]
    unknown = sorted(set(values) - set(kind.names()))
    if unknown:
        msg = f"{name}: unknown parameter(s) {', '.join(unknown)}; known: {', '.join(kind.names())}"
        raise ValueError(msg)
    params = {p.name: values.get(p.name, p.default) for p in kind.parameters}
    for p in kind.parameters:
        if p.type == "double":
            params[p.name] = float(params[p.name])
        problem = p.validate(params[p.name])
        if problem is not None:
            msg = f"{name}: {problem}"
            raise ValueError(msg)
    return NodeSpec(name, kind.executable, stage, inputs, outputs, params)


def headset_graph(
    calibration_path: str | Path,
    profile_dir: str | Path | None,
    *,
    queue_depth: int = DEFAULT_QUEUE_DEPTH,
    slop_ms: float = DEFAULT_SLOP_MS,
    session: str | Path | None = None,
    rate: float = DEFAULT_RATE,
    layout_size: int = DEFAULT_LAYOUT_SIZE,
    aligner: str = "homography",
    restorer: str = "paste+poisson",
) -> GraphSpec:
    """The headset graph: 3 cameras -> 3 aligners -> restoration (synchronized) -> display.

    Args:
        calibration_path: headset calibration YAML.
        profile_dir: enrollment profile directory ("" or None: unset, restoration will refuse).
        queue_depth: keep-last depth of every subscription.
        slop_ms: approximate-time synchronizer slop of the restoration node (ms).
        session: session bag the camera nodes publish from (ROS); the runner feeds its own.
        rate: playback rate of the camera nodes (1 = real time, 0 = as fast as possible).
        layout_size: canonical face size (px).
        aligner: ALIGNERS key; restorer: RESTORERS key.

    Returns:
        The GraphSpec, nodes in topological order.

    Raises:
        ValueError: a parameter of the wrong type or outside its range.
    """
    calib = str(calibration_path)
    common = {"queue_depth": int(queue_depth)}
    nodes: list[NodeSpec] = []
    for cam in CAMERA_NAMES:
        nodes.append(_node(
            f"{cam}_camera", "ingestion", {},
            {"image_raw": f"/revavatar/{cam}/image_raw",
             "camera_info": f"/revavatar/{cam}/camera_info"},
            {"camera": cam, "calibration": calib, "source": str(session or ""), "rate": rate,
             **common},
        ))
    for cam in CAMERA_NAMES:
        nodes.append(_node(
            f"align_{cam}", "alignment",
            {"image_raw": f"/revavatar/{cam}/image_raw"},
            {"aligned": f"/revavatar/{cam}/aligned"},
            {"camera": cam, "calibration": calib, "method": aligner,
             "profile": str(profile_dir or ""), "layout_size": layout_size, **common},
        ))
    nodes.append(_node(
        "restoration", "restoration",
        {f"{cam}/aligned": f"/revavatar/{cam}/aligned" for cam in CAMERA_NAMES},
        {"composite": "/revavatar/face/composite", "restored": "/revavatar/face/restored"},
        {"calibration": calib, "profile": str(profile_dir or ""), "method": restorer,
         "layout_size": layout_size, "slop_ms": slop_ms, **common},
    ))
    nodes.append(_node(
        "display", "display",
        {"restored": "/revavatar/face/restored"},
        {"image": "/revavatar/display/image"},
        {"calibration": calib, "layout_size": layout_size, **common},
    ))
    return GraphSpec(tuple(nodes))


def wiring_of(nodes: Mapping[str, tuple[Mapping[str, str], Mapping[str, str]]]
              ) -> set[tuple[str, str, str]]:
    """(publisher, topic, subscriber) edges of nodes given as name -> (inputs, outputs) topics."""
    edges = set()
    for pub, (_, outs) in nodes.items():
        for topic in outs.values():
            for sub, (ins, _) in nodes.items():
                if topic in ins.values():
                    edges.add((pub, topic, sub))
    return edges


def render_nodes_doc(spec: GraphSpec | None = None) -> str:
    """docs/nodes.md, generated from the description (a test keeps the file in sync).

    Args:
        spec: the graph whose instances and remappings to list (default: headset_graph with
            placeholder paths).
    """
    spec = spec or headset_graph("calibration/generic.yaml", "")
    out = [
        "# RevAvatar nodes",
        "",
        "<!-- Generated by revavatar.graph.description.render_nodes_doc(); do not edit. -->",
        "",
        "The graph of `launch/headset.launch.py` and of the embedded runner (`revavatar run`) is",
        "built from one description, `revavatar/graph/description.py`. Nodes use relative topic",
        "names; the launch file remaps them to the absolute topics listed under each entry.",
        "Every node also takes ROS 2's **use_sim_time** (bool, default: false), set by the launch",
        "argument of the same name. There is no avatar node yet (that stage does not exist).",
        "",
        "Launch arguments: **headset** (calibration YAML or profile name), **profile** (enrollment",
        "directory), **session** (bag to publish), **rate**, **use_sim_time**, **queue_depth**,",
        "**slop_ms**.",
    ]
    for kind in STAGE_KINDS.values():
        nodes = [n for n in spec.nodes if n.stage == kind.stage]
        out += ["", f"## {kind.executable}", "", kind.summary, ""]
        out.append("Nodes: " + ", ".join(f"`{n.name}`" for n in nodes) + ".")
        for title, ports, attr in (("Subscribed Topics", kind.inputs, "inputs"),
                                   ("Published Topics", kind.outputs, "outputs")):
            out += ["", f"### {title}", ""]
            if not ports:
                out.append("None (frames come from the session bag).")
            for port, ps in ports.items():
                targets = ", ".join(f"`{getattr(n, attr)[port]}` ({n.name})" for n in nodes)
                out.append(f"- **{port}** ({ps.msg_type}): {ps.description}; remapped to {targets}")
        out += ["", "### Parameters", ""]
        out += [f"- {p.doc_line()}" for p in kind.parameters]
    return "\n".join(out) + "\n"
