"""The graph description: structure, parameter validation, and docs/nodes.md kept in sync."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from revavatar.graph.description import (
    STAGE_KINDS,
    GraphSpec,
    ParamSpec,
    headset_graph,
    render_nodes_doc,
    wiring_of,
)

DOC = Path(__file__).resolve().parents[1] / "docs" / "nodes.md"


def test_headset_graph_nodes_topics_and_order() -> None:
    g = headset_graph("h.yaml", "/p", queue_depth=7, slop_ms=15)
    assert [n.name for n in g.nodes] == [
        "left_eye_camera", "right_eye_camera", "lower_face_camera",
        "align_left_eye", "align_right_eye", "align_lower_face", "restoration", "display"]
    assert "avatar" not in {n.stage for n in g.nodes}
    cam = g.node("lower_face_camera")
    assert cam.executable == "camera_node" and cam.inputs == {}
    assert cam.outputs == {"image_raw": "/revavatar/lower_face/image_raw",
                           "camera_info": "/revavatar/lower_face/camera_info"}
    align = g.node("align_right_eye")
    assert align.inputs == {"image_raw": "/revavatar/right_eye/image_raw"}
    assert align.outputs == {"aligned": "/revavatar/right_eye/aligned"}
    assert align.parameters["method"] == "homography"
    rest = g.node("restoration")
    assert set(rest.inputs.values()) == {f"/revavatar/{c}/aligned"
                                         for c in ("left_eye", "right_eye", "lower_face")}
    assert rest.outputs == {"composite": "/revavatar/face/composite",
                            "restored": "/revavatar/face/restored"}
    assert rest.parameters["slop_ms"] == 15.0 and isinstance(rest.parameters["slop_ms"], float)
    assert rest.parameters["profile"] == "/p"
    assert g.node("display").outputs == {"image": "/revavatar/display/image"}
    assert all(n.parameters["queue_depth"] == 7 for n in g.nodes)
    # every node carries exactly its kind's parameters
    for n in g.nodes:
        assert tuple(n.parameters) == STAGE_KINDS[n.stage].names()
        assert set(n.inputs) == set(n.kind.inputs) and set(n.outputs) == set(n.kind.outputs)
    with pytest.raises(KeyError, match="no node"):
        g.node("avatar")


def test_remappings_are_relative_to_absolute() -> None:
    node = headset_graph("h.yaml", "").node("align_left_eye")
    assert node.remappings() == [("image_raw", "/revavatar/left_eye/image_raw"),
                                 ("aligned", "/revavatar/left_eye/aligned")]
    for n in headset_graph("h.yaml", "").nodes:
        for rel, absolute in n.remappings():
            assert not rel.startswith("/") and absolute.startswith("/revavatar/")


def test_parameters_are_validated() -> None:
    with pytest.raises(ValueError, match="queue_depth"):
        headset_graph("h.yaml", "", queue_depth=0)
    with pytest.raises(ValueError, match="slop_ms"):
        headset_graph("h.yaml", "", slop_ms=-1)
    with pytest.raises(ValueError, match="layout_size"):
        headset_graph("h.yaml", "", layout_size=300)
    spec = ParamSpec("x", "integer", 1, "d", range=(0, 3))
    assert spec.validate(2) is None
    assert "expected integer" in spec.validate(True)  # bool is not an integer parameter
    assert "outside" in spec.validate(4)
    assert ParamSpec("y", "double", 1.0, "d").validate(2) is None  # ints are fine for doubles
    assert "not one of" in ParamSpec("z", "string", "a", "d", choices=("a",)).validate("b")


def test_wiring_of_is_a_dag_from_cameras_to_display() -> None:
    g = headset_graph("h.yaml", "")
    edges = wiring_of({n.name: (n.inputs, n.outputs) for n in g.nodes})
    assert len(edges) == 7
    order = [n.name for n in g.nodes]
    assert all(order.index(p) < order.index(s) for p, _, s in edges)  # topological order
    assert GraphSpec(g.nodes).topics() >= {"/revavatar/display/image", "/revavatar/face/composite"}


def test_docs_nodes_md_is_generated_from_the_description() -> None:
    assert DOC.read_text() == render_nodes_doc(), (
        "docs/nodes.md is stale: regenerate with python -c 'from revavatar.graph.description "
        "import render_nodes_doc; open(\"docs/nodes.md\", \"w\").write(render_nodes_doc())'")


def test_docs_list_every_parameter_and_topic_of_every_node() -> None:
    text = DOC.read_text()
    sections = dict(re.findall(r"^## (\w+)\n(.*?)(?=^## |\Z)", text, flags=re.S | re.M))
    assert set(sections) == {k.executable for k in STAGE_KINDS.values()}
    for kind in STAGE_KINDS.values():
        body = sections[kind.executable]
        params = body.split("### Parameters")[1]
        documented = re.findall(r"^- \*\*(\w+)\*\* \((\w+), default: ([^)]*)\)", params, re.M)
        assert [(n, t) for n, t, _ in documented] == [(p.name, p.type) for p in kind.parameters]
        subscribed = body.split("### Subscribed Topics")[1].split("### Published Topics")[0]
        published = body.split("### Published Topics")[1].split("### Parameters")[0]
        assert re.findall(r"^- \*\*([\w/]+)\*\*", subscribed, re.M) == list(kind.inputs)
        assert re.findall(r"^- \*\*([\w/]+)\*\*", published, re.M) == list(kind.outputs)
    for topic in headset_graph("h.yaml", "").topics():
        assert f"`{topic}`" in text
