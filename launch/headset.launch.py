"""Launch the RevAvatar headset graph: 3 cameras, 3 aligners, restoration, display.

The nodes, their topics and parameters come from ``revavatar.graph.description.headset_graph``,
the same description the embedded runner (``revavatar run``) uses, so both wire identically.
Each node uses relative topic names; they are remapped here to the absolute ``/revavatar/...``
topics of the description.

    ros2 launch revavatar headset.launch.py headset:=quest_pro_like profile:=~/.revavatar/me \
        session:=recordings/session1 rate:=1.0
"""

from __future__ import annotations

from pathlib import Path

from launch import LaunchDescription
from launch.actions import DeclareLaunchArgument, OpaqueFunction
from launch.substitutions import LaunchConfiguration
from launch_ros.actions import Node

from revavatar.graph.description import (
    DEFAULT_QUEUE_DEPTH,
    DEFAULT_RATE,
    DEFAULT_SLOP_MS,
    headset_graph,
)

#: share/revavatar (installed) or the project root (source tree): both hold calibration/
_SHARE = Path(__file__).resolve().parent.parent

ARGUMENTS = (
    ("headset", "generic",
     "headset calibration: a YAML path, or the name of a profile in calibration/ "
     "(generic, quest_pro_like, vive_focus_like)"),
    ("profile", "", "enrollment profile directory written by `revavatar enroll` (required)"),
    ("session", "", "session bag (rosbag2 directory) the camera nodes publish"),
    ("rate", str(DEFAULT_RATE), "playback rate of the session (1 = real time, 0 = as fast as "
     "possible)"),
    ("use_sim_time", "false", "use the /clock topic (e.g. from `ros2 bag play --clock`)"),
    ("queue_depth", str(DEFAULT_QUEUE_DEPTH),
     "keep-last depth of every subscription (oldest message dropped when full)"),
    ("slop_ms", str(DEFAULT_SLOP_MS),
     "largest header-stamp spread (ms) of a synchronized set of camera crops"),
)


def _calibration_path(headset: str) -> str:
    """A YAML path as given, or calibration/<name>.yaml for a bare profile name."""
    if headset.endswith((".yaml", ".yml")) or "/" in headset:
        return str(Path(headset).expanduser())
    return str(_SHARE / "calibration" / f"{headset}.yaml")


def _nodes(context, *args, **kwargs):  # noqa: ANN001, ANN002, ANN003, ARG001 - OpaqueFunction API
    """Resolve the launch arguments and turn each NodeSpec of the description into a Node."""
    value = {name: LaunchConfiguration(name).perform(context) for name, _, _ in ARGUMENTS}
    spec = headset_graph(
        _calibration_path(value["headset"]),
        str(Path(value["profile"]).expanduser()) if value["profile"] else "",
        queue_depth=int(value["queue_depth"]),
        slop_ms=float(value["slop_ms"]),
        session=value["session"],
        rate=float(value["rate"]),
    )
    use_sim_time = value["use_sim_time"].strip().lower() in ("true", "1", "yes")
    return [
        Node(
            package="revavatar",
            executable=node.executable,
            name=node.name,
            parameters=[dict(node.parameters), {"use_sim_time": use_sim_time}],
            remappings=node.remappings(),
            output="screen",
        )
        for node in spec.nodes
    ]


def generate_launch_description():  # noqa: ANN201 - launch API
    """Launch arguments (each with a description) and the graph's nodes."""
    return LaunchDescription([
        *(DeclareLaunchArgument(name, default_value=default, description=text)
          for name, default, text in ARGUMENTS),
        OpaqueFunction(function=_nodes),
    ])
