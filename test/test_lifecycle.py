"""The managed node (camera_seg_lifecycle_node) over real DDS (issue #16): transitions through
the standard lifecycle_msgs services, with what each state does to the topics."""

from __future__ import annotations

import time

from diagnostic_msgs.msg import DiagnosticArray
from lifecycle_msgs.msg import Transition
from lifecycle_msgs.srv import ChangeState, GetState
from sensor_msgs.msg import Image

from ros_harness import RELIABLE, Camera, NodeProcess, still_there
from test_node import DiagnosticStatus_ERROR, image_msg, sample_scene_in_test_colours, stamp_of, wait_status

LIFECYCLE_EXE = "camera_seg_lifecycle_node"


def call(peer, srv_type, name, request, timeout=30.0):
    client = peer.node.create_client(srv_type, name)
    try:
        assert client.wait_for_service(timeout_sec=timeout), f"{name} not offered"
        future = client.call_async(request)
        end = time.monotonic() + timeout
        while not future.done() and time.monotonic() < end:
            time.sleep(0.02)
        assert future.done(), f"{name}: no answer in {timeout} s"
        return future.result()
    finally:
        peer.node.destroy_client(client)


def state_of(peer) -> str:
    return call(peer, GetState, "/camera_seg/get_state", GetState.Request()).current_state.label


def transition(peer, transition_id) -> bool:
    req = ChangeState.Request()
    req.transition.id = transition_id
    return call(peer, ChangeState, "/camera_seg/change_state", req, timeout=60.0).success


def start_managed(ros_domain, colour_model, **params):
    model, labels = colour_model
    p = {"model": model, "label_file": labels, "grid.enabled": False}
    p.update(params)
    return NodeProcess(ros_domain[0], ros_domain[1], params=p, executable=LIFECYCLE_EXE)


def test_lifecycle_transitions_gate_model_and_topics(ros_domain, peer, colour_model):
    _, rgb = sample_scene_in_test_colours(160, 120)
    node = start_managed(ros_domain, colour_model)
    try:
        labels = peer.subscribe(Image, "/camera_seg/labels", RELIABLE)
        diag = peer.subscribe(DiagnosticArray, "/diagnostics", RELIABLE)
        pub = peer.publisher(Image, "/image", RELIABLE)
        cam = Camera(pub, lambda s: image_msg(rgb, s), rate=10.0)
        cam.start()
        try:
            # unconfigured: no model, no subscription, no output publisher; diagnostics say so
            assert state_of(peer) == "unconfigured", node.log()
            st = wait_status(diag, lambda s: "configure loads the model" in s.message)
            assert st is not None, node.log()
            assert peer.node.count_subscribers("/image") == 0
            assert peer.node.count_publishers("/camera_seg/labels") == 0
            # configure: the model loads inside the transition; still no input, no output
            assert transition(peer, Transition.TRANSITION_CONFIGURE), node.log()
            assert state_of(peer) == "inactive"
            assert "loaded in" in node.log()
            assert peer.wait_publishers("/camera_seg/labels"), node.log()
            time.sleep(2.0)
            assert labels.snapshot() == [] and peer.node.count_subscribers("/image") == 0
            st = wait_status(diag, lambda s: s.message.startswith("inactive"))
            assert st is not None, node.log()
            # activate: the camera's frames come out with their stamps
            assert transition(peer, Transition.TRANSITION_ACTIVATE), node.log()
            assert state_of(peer) == "active"
            assert labels.wait_count(3, 30), node.log()
            assert {stamp_of(m) for m in labels.snapshot()} <= {s for s, _ in cam.sent}
            # deactivate: outputs stop, the model stays
            assert transition(peer, Transition.TRANSITION_DEACTIVATE), node.log()
            time.sleep(1.0)
            n = len(labels.snapshot())
            time.sleep(2.0)
            assert len(labels.snapshot()) == n, "outputs went on while inactive"
            assert peer.node.count_subscribers("/image") == 0
            # activate again: no second load, outputs again
            assert transition(peer, Transition.TRANSITION_ACTIVATE), node.log()
            assert labels.wait_count(n + 3, 30), node.log()
            assert node.log().count("loaded in") == 1
            # deactivate + cleanup: back to unconfigured, the publishers gone
            assert transition(peer, Transition.TRANSITION_DEACTIVATE)
            assert transition(peer, Transition.TRANSITION_CLEANUP), node.log()
            assert state_of(peer) == "unconfigured"
            end = time.monotonic() + 10
            while peer.node.count_publishers("/camera_seg/labels") and time.monotonic() < end:
                time.sleep(0.1)
            assert peer.node.count_publishers("/camera_seg/labels") == 0
            # configure again loads the model again (cleanup released it)
            assert transition(peer, Transition.TRANSITION_CONFIGURE), node.log()
            assert node.log().count("loaded in") == 2
            # shutdown: the process ends, cleanly, its participant and shared memory with it
            segments = node.shm_segments()
            assert segments, node.log()
            assert transition(peer, Transition.TRANSITION_INACTIVE_SHUTDOWN), node.log()
            end = time.monotonic() + 15
            while node.alive() and time.monotonic() < end:
                time.sleep(0.1)
            assert not node.alive(), node.log()
            assert node.proc.returncode == 0, node.log()
            assert still_there(segments) == []
        finally:
            cam.stop()
    finally:
        node.stop()


def test_configure_fails_on_a_missing_model_and_says_why(ros_domain, peer, colour_model, tmp_path):
    node = start_managed(ros_domain, colour_model, model=str(tmp_path / "missing.onnx"))
    try:
        diag = peer.subscribe(DiagnosticArray, "/diagnostics", RELIABLE)
        assert state_of(peer) == "unconfigured", node.log()
        assert not transition(peer, Transition.TRANSITION_CONFIGURE)
        assert state_of(peer) == "unconfigured"
        st = wait_status(diag, lambda s: s.message.startswith("configure failed"))
        assert st is not None and st.level == DiagnosticStatus_ERROR and "missing.onnx" in st.message, node.log()
        assert peer.node.count_publishers("/camera_seg/labels") == 0
        assert node.alive()
        segments = node.shm_segments()
        assert node.stop() == 0, node.log()  # SIGINT while unconfigured
        assert segments and still_there(segments) == []
    finally:
        node.stop()


def test_autostart_configures_and_activates_the_node_itself(ros_domain, peer, colour_model, tmp_path):
    """autostart (what the launch file's managed:=true sets): active without a lifecycle
    manager, its frames coming out; a model that cannot load leaves it unconfigured, saying why,
    and still answering the lifecycle services."""
    _, rgb = sample_scene_in_test_colours(160, 120)
    node = start_managed(ros_domain, colour_model, autostart=True)
    try:
        labels = peer.subscribe(Image, "/camera_seg/labels", RELIABLE)
        pub = peer.publisher(Image, "/image", RELIABLE)
        cam = Camera(pub, lambda s: image_msg(rgb, s), rate=10.0)
        cam.start()
        try:
            assert labels.wait_count(3, 60), node.log()
            assert state_of(peer) == "active"
            assert node.log().count("loaded in") == 1
        finally:
            cam.stop()
        assert node.stop() == 0, node.log()
    finally:
        node.stop()
    node = start_managed(ros_domain, colour_model, autostart=True, model=str(tmp_path / "missing.onnx"))
    try:
        end = time.monotonic() + 30
        while "configure failed" not in node.log() and time.monotonic() < end:
            time.sleep(0.2)
        assert "configure failed" in node.log() and "missing.onnx" in node.log()
        assert state_of(peer) == "unconfigured"
        assert node.stop() == 0, node.log()
    finally:
        node.stop()
