"""Pure cores never import rclpy: importing them leaves rclpy out of sys.modules."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import revavatar

PKG = Path(revavatar.__file__).resolve().parent

_PROBE = r"""
import importlib, json, pkgutil, sys
import revavatar
names = ["revavatar.bag", "revavatar.errors", "revavatar.ros", "revavatar.ros.node",
         "revavatar.ros.convert"]
for sub in ("core", "graph", "vrface", "nodes"):
    pkg = importlib.import_module(f"revavatar.{sub}")
    names += [m.name for m in pkgutil.walk_packages(pkg.__path__, f"revavatar.{sub}.")]
names.insert(0, "revavatar.graph")
leaks, failed = [], {}
for name in names:
    try:
        importlib.import_module(name)
    except Exception as err:  # report, the test decides
        failed[name] = f"{type(err).__name__}: {err}"
    if any(m == "rclpy" or m.startswith("rclpy.") for m in sys.modules):
        leaks.append(name)
        break
print(json.dumps({"names": names, "leaks": leaks, "failed": failed}))
"""


def test_importing_cores_graph_vrface_bag_does_not_import_rclpy() -> None:
    # a fresh interpreter, so nothing imported by other tests can hide (or cause) a leak
    proc = subprocess.run([sys.executable, "-c", _PROBE], capture_output=True, text=True,
                          timeout=120, check=True)
    result = json.loads(proc.stdout.strip().splitlines()[-1])
    assert "revavatar.graph.runner" in result["names"]
    assert "revavatar.core.messages" in result["names"]
    assert "revavatar.nodes.alignment_node" in result["names"]
    assert result["leaks"] == [], f"rclpy imported by {result['leaks']}"
    assert result["failed"] == {}, result["failed"]


def test_no_module_outside_ros_and_nodes_imports_rclpy() -> None:
    pattern = re.compile(r"^\s*(import rclpy|from rclpy)", re.M)
    offenders = []
    for path in PKG.rglob("*.py"):
        rel = path.relative_to(PKG)
        if rel.parts[0] in ("ros", "nodes"):
            continue
        if pattern.search(path.read_text(encoding="utf-8")):
            offenders.append(str(rel))
    assert offenders == []
    # and the check itself sees the shell's (lazy, function-level) rclpy import
    assert pattern.search((PKG / "ros" / "node.py").read_text(encoding="utf-8"))
