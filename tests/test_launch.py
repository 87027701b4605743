"""launch/headset.launch.py wires exactly like the embedded runner (fake launch modules)."""

from __future__ import annotations

import importlib.util
import sys
import types
from pathlib import Path
from typing import Any

import pytest

from revavatar.graph.description import STAGE_KINDS, headset_graph, wiring_of
from revavatar.graph.runner import GraphRunner

LAUNCH_FILE = Path(__file__).resolve().parents[1] / "launch" / "headset.launch.py"


class LaunchDescription:
    def __init__(self, entities: list[Any]) -> None:
        self.entities = list(entities)


class DeclareLaunchArgument:
    def __init__(self, name: str, default_value: str = "", description: str = "") -> None:
        self.name, self.default_value, self.description = name, default_value, description


class OpaqueFunction:
    def __init__(self, function: Any) -> None:
        self.function = function


class LaunchConfiguration:
    def __init__(self, name: str) -> None:
        self.name = name

    def perform(self, context: Any) -> str:
        return context.launch_configurations[self.name]


class Node:
    def __init__(self, *, package: str, executable: str, name: str, parameters: list[dict],
                 remappings: list[tuple[str, str]], output: str = "log") -> None:
        self.package, self.executable, self.name = package, executable, name
        self.parameters, self.remappings = parameters, list(remappings)


class Context:
    def __init__(self, values: dict[str, str]) -> None:
        self.launch_configurations = values


@pytest.fixture
def launch_module(monkeypatch: pytest.MonkeyPatch) -> types.ModuleType:
    fakes = {
        "launch": {"LaunchDescription": LaunchDescription},
        "launch.actions": {"DeclareLaunchArgument": DeclareLaunchArgument,
                           "OpaqueFunction": OpaqueFunction},
        "launch.substitutions": {"LaunchConfiguration": LaunchConfiguration},
        "launch_ros": {},
        "launch_ros.actions": {"Node": Node},
    }
    for name, attrs in fakes.items():
        mod = types.ModuleType(name)
        mod.__dict__.update(attrs)
        monkeypatch.setitem(sys.modules, name, mod)
    spec = importlib.util.spec_from_file_location("headset_launch", LAUNCH_FILE)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _launch(module: types.ModuleType, **overrides: str) -> tuple[dict[str, DeclareLaunchArgument],
                                                                  list[Node]]:
    ld = module.generate_launch_description()
    args = {e.name: e for e in ld.entities if isinstance(e, DeclareLaunchArgument)}
    ctx = Context({name: a.default_value for name, a in args.items()} | overrides)
    nodes = [n for e in ld.entities if isinstance(e, OpaqueFunction) for n in e.function(ctx)]
    return args, nodes


def launch_edges(nodes: list[Node]) -> set[tuple[str, str, str]]:
    """Edges of launched nodes: each executable's relative ports resolved through its remappings."""
    kinds = {k.executable: k for k in STAGE_KINDS.values()}
    resolved = {}
    for n in nodes:
        remap = dict(n.remappings)
        kind = kinds[n.executable]

        def topic(port: str, remap: dict[str, str] = remap) -> str:
            return remap.get(port, "/" + port)  # an unremapped relative name lands in the root ns

        resolved[n.name] = ({p: topic(p) for p in kind.inputs}, {p: topic(p) for p in kind.outputs})
    return wiring_of(resolved)


def differences(nodes: list[Node], runner: GraphRunner) -> list[str]:
    """Everything in which the launched graph differs from the runner's."""
    out = []
    spec = {n.name: n for n in runner.spec.nodes}
    if {n.name for n in nodes} != set(spec):
        out.append(f"node names {sorted(n.name for n in nodes)} != {sorted(spec)}")
    for n in nodes:
        s = spec.get(n.name)
        if s is None:
            continue
        if n.package != "revavatar" or n.executable != s.executable:
            out.append(f"{n.name}: executable {n.package}/{n.executable} != {s.executable}")
        if n.parameters[0] != dict(s.parameters):
            out.append(f"{n.name}: parameters {n.parameters[0]} != {dict(s.parameters)}")
    if launch_edges(nodes) != runner.wiring():
        out.append(f"edges differ: {launch_edges(nodes) ^ runner.wiring()}")
    return out


def test_launch_arguments_have_descriptions(launch_module: types.ModuleType) -> None:
    args, _ = _launch(launch_module)
    for name in ("headset", "profile", "use_sim_time", "queue_depth", "slop_ms"):
        assert name in args
        assert len(args[name].description) > 15, name


def test_launch_wires_exactly_like_the_runner(launch_module: types.ModuleType) -> None:
    _, nodes = _launch(launch_module, profile="/tmp/me", queue_depth="3", slop_ms="12.5")
    calib = str(LAUNCH_FILE.parent.parent / "calibration" / "generic.yaml")
    runner = GraphRunner(headset_graph(calib, "/tmp/me", queue_depth=3, slop_ms=12.5))
    assert differences(nodes, runner) == []
    assert len(runner.wiring()) == 7
    by_name = {n.name: n for n in nodes}
    assert by_name["restoration"].parameters[0]["slop_ms"] == 12.5
    assert by_name["display"].parameters[1] == {"use_sim_time": False}
    assert ("aligned", "/revavatar/left_eye/aligned") in by_name["align_left_eye"].remappings


def test_headset_name_resolves_to_the_calibration_file(launch_module: types.ModuleType) -> None:
    _, nodes = _launch(launch_module, headset="quest_pro_like", use_sim_time="true")
    cam = next(n for n in nodes if n.name == "left_eye_camera")
    assert cam.parameters[0]["calibration"].endswith("calibration/quest_pro_like.yaml")
    assert cam.parameters[1] == {"use_sim_time": True}


def test_a_mutated_remapping_is_detected(launch_module: types.ModuleType) -> None:
    _, nodes = _launch(launch_module)
    calib = str(LAUNCH_FILE.parent.parent / "calibration" / "generic.yaml")
    runner = GraphRunner(headset_graph(calib, ""))
    assert differences(nodes, runner) == []
    victim = next(n for n in nodes if n.name == "align_left_eye")
    victim.remappings = [(k, "/revavatar/right_eye/image_raw" if k == "image_raw" else v)
                         for k, v in victim.remappings]
    diff = differences(nodes, runner)
    assert len(diff) == 1 and diff[0].startswith("edges differ")
    dropped = next(n for n in nodes if n.name == "display")
    dropped.remappings = []  # no remapping at all: subscribes /restored, which nobody publishes
    assert ("restoration", "/revavatar/face/restored", "display") not in launch_edges(nodes)
