"""The camera_seg node over real ROS 2 / Fast DDS: started through its console script with the
shipped params file, fed from a test process that uses no DDS profile of ours."""

from __future__ import annotations

import os
import re
import signal
import threading
import time

import cv2
import numpy as np
import pytest
from diagnostic_msgs.msg import DiagnosticArray
from rcl_interfaces.msg import Parameter, ParameterType, ParameterValue
from rcl_interfaces.srv import GetParameters, SetParameters, SetParametersAtomically
from sensor_msgs.msg import CameraInfo, CompressedImage, Image

from models import (CLASS_ID, colour_confidence, COLOR, STREET_LAYOUT, TEST_LABEL_YAML, layout_ids, make_colour_model,
                    paint_blocks)
from ros_harness import BEST_EFFORT, RELIABLE, Camera, NodeProcess

from seg_perception.core.outputs import IMAGE_OUTPUTS as OUTPUTS
from seg_perception.core.pipeline import WAITS
LAYOUT = STREET_LAYOUT
GROUPS = {"road_mask": ["Road"], "pedestrian_mask": ["Person"], "parking_mask": ["Parking"]}


def image_msg(rgb: np.ndarray, stamp_ns: int, encoding: str = "rgb8", frame_id: str = "camera_optical",
              pad: int = 0) -> Image:
    if encoding == "bgr8":
        data = cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR)
    elif encoding == "rgb8":
        data = rgb
    else:
        raise ValueError(encoding)
    h, w, c = data.shape
    step = w * c + pad
    buf = np.zeros((h, step), np.uint8)
    buf[:, :w * c] = data.reshape(h, w * c)
    msg = Image()
    msg.header.stamp.sec, msg.header.stamp.nanosec = divmod(stamp_ns, 10 ** 9)
    msg.header.frame_id = frame_id
    msg.height, msg.width, msg.encoding, msg.step = h, w, encoding, step
    msg.data = buf.tobytes()
    return msg


def camera_info(width: int, height: int, stamp_ns: int = 0) -> CameraInfo:
    ci = CameraInfo()
    ci.header.stamp.sec, ci.header.stamp.nanosec = divmod(stamp_ns, 10 ** 9)
    ci.header.frame_id = "camera_optical"
    ci.width, ci.height = width, height
    f = width / 2.0
    ci.k = [f, 0.0, (width - 1) / 2.0, 0.0, f, (height - 1) / 2.0, 0.0, 0.0, 1.0]
    ci.p = [f, 0.0, (width - 1) / 2.0, 0.0, 0.0, f, (height - 1) / 2.0, 0.0, 0.0, 0.0, 1.0, 0.0]
    ci.r = [1.0, 0, 0, 0, 1.0, 0, 0, 0, 1.0]
    ci.distortion_model = "plumb_bob"
    ci.d = [0.0] * 5
    return ci


def stamp_of(msg) -> int:
    return msg.header.stamp.sec * 10 ** 9 + msg.header.stamp.nanosec


def as_array(msg: Image) -> np.ndarray:
    ch = 3 if msg.encoding == "rgb8" else 1
    arr = np.frombuffer(msg.data, np.uint8).reshape(msg.height, msg.step)[:, :msg.width * ch]
    return arr.reshape(msg.height, msg.width, ch).squeeze(-1) if ch == 1 else arr.reshape(msg.height, msg.width, 3)


def latest_status(diag_col, suffix: str = "segmentation"):
    for arr in reversed(diag_col.snapshot()):
        for st in arr.status:
            if st.name.endswith(suffix):
                return st
    return None


def status_values(st) -> dict:
    return {kv.key: kv.value for kv in st.values}


def feed_until(peer, pub, make_msg, collectors, timeout=60.0, period=0.25):
    """Publish frames (a new stamp each) until every collector has an output of one published
    stamp; returns that stamp."""
    end = time.monotonic() + timeout
    sent = []
    i = 0
    while time.monotonic() < end:
        msg = make_msg(1_700_000_000_000_000_000 + i * 50_000_000)
        pub.publish(msg)
        sent.append(stamp_of(msg))
        i += 1
        deadline = time.monotonic() + period
        while time.monotonic() < deadline:
            common = None
            for col in collectors:
                stamps = {stamp_of(m) for m in col.snapshot()}
                common = stamps if common is None else common & stamps
            hits = (common or set()) & set(sent)
            if hits:
                return max(hits)
            time.sleep(0.02)
    raise AssertionError("no complete set of outputs arrived")


def start_node(ros_domain, colour_model, **params):
    model, labels = colour_model
    p = {"model": model, "label_file": labels, "grid.enabled": False}
    p.update(params)
    return NodeProcess(ros_domain[0], ros_domain[1], params=p)


def subscribe_outputs(peer, names=OUTPUTS):
    return {n: peer.subscribe(Image, f"/camera_seg/{n}", RELIABLE) for n in names}


def check_outputs(outs, stamp, rgb, frame_id="camera_optical", overlay_max_width=960):
    h, w = rgb.shape[:2]
    expected = np.kron(layout_ids(LAYOUT), np.ones((h // len(LAYOUT), w // len(LAYOUT[0])), np.uint8))
    msgs = {n: next(m for m in col.snapshot() if stamp_of(m) == stamp) for n, col in outs.items()}
    # the overlay is for eyes: at most overlay_max_width wide, same aspect ratio
    ow = min(w, overlay_max_width) if overlay_max_width else w
    oh = h * ow // w
    for n, m in msgs.items():
        assert m.header.frame_id == frame_id, n
        assert (m.height, m.width) == ((oh, ow) if n == "overlay" else (h, w)), n
        assert m.encoding == ("rgb8" if n == "overlay" else "mono8"), n
    labels = as_array(msgs["labels"])
    np.testing.assert_array_equal(labels, expected)
    if "confidence" in msgs:  # the model's second output, at the frame's size
        conf = as_array(msgs["confidence"])
        assert np.abs(conf.astype(int) - colour_confidence(rgb).astype(int)).max() <= 1
    for n, classes in GROUPS.items():
        mask = as_array(msgs[n])
        assert set(np.unique(mask)) <= {0, 255}
        want = np.isin(labels, [CLASS_ID[c] for c in classes])
        assert want.any()
        np.testing.assert_array_equal(mask == 255, want, err_msg=n)
    overlay = as_array(msgs["overlay"]).astype(int)
    # alpha 0.5 over a frame painted in the class colours: the overlay equals the (shrunk) frame
    frame = cv2.resize(rgb, (ow, oh), interpolation=cv2.INTER_AREA) if (oh, ow) != (h, w) else rgb
    assert np.abs(overlay - frame.astype(int)).max() <= 1
    return msgs


@pytest.mark.parametrize("executor", ["auto", "single_threaded"])
def test_full_hd_rgb8_all_outputs(ros_domain, peer, colour_model, executor):
    """1920x1080 rgb8 from a participant without our DDS profile reaches the node; every output
    arrives with the input's header, at the input size (the overlay shrunk to overlay_max_width),
    consistent with labels and label file. With either executor: auto takes rclpy's
    EventsExecutor where it is there (here), single_threaded is what Humble runs."""
    node = start_node(ros_domain, colour_model, executor=executor)
    try:
        outs = subscribe_outputs(peer)
        diag = peer.subscribe(DiagnosticArray, "/diagnostics", RELIABLE)
        pub = peer.publisher(Image, "/image", RELIABLE)
        ci_pub = peer.publisher(CameraInfo, "/camera_info", RELIABLE)
        assert peer.wait_matched(pub), node.log()
        rgb = paint_blocks(LAYOUT, 180, 240)  # 1080 x 1920
        ci_pub.publish(camera_info(1920, 1080))
        try:
            stamp = feed_until(peer, pub, lambda s: image_msg(rgb, s), list(outs.values()))
        except AssertionError:
            st = latest_status(diag)
            raise AssertionError(f"{status_values(st) if st else 'no diagnostics'}\n"
                                 f"{ {n: len(c.snapshot()) for n, c in outs.items()} }\n{node.log()}")
        check_outputs(outs, stamp, rgb)
        from seg_perception.ros.executor import events_executor_class

        auto = "events" if events_executor_class()[0] is not None else "single_threaded"
        assert f"executor: {auto if executor == 'auto' else executor}" in node.log()
        # one network run leaves a core (2 cores or more): the output thread alone at output_niceness
        # (the node inherits the test's niceness; the output thread starts no threads of its own)
        base, nice = os.getpriority(os.PRIO_PROCESS, 0), node.thread_niceness()
        niced = min(19, base + 5)
        assert nice.count(niced) == (len(os.sched_getaffinity(0)) >= 2) and set(nice) <= {base, niced}, nice
    finally:
        assert node.stop() == 0, node.log()


def compressed_msg(rgb: np.ndarray, stamp_ns: int, fmt: str) -> CompressedImage:
    ext, opts = (".png", []) if fmt == "png" else (".jpg", [cv2.IMWRITE_JPEG_QUALITY, 98])
    ok, enc = cv2.imencode(ext, cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR), opts)
    msg = CompressedImage()
    msg.header.stamp.sec, msg.header.stamp.nanosec = divmod(stamp_ns, 10 ** 9)
    msg.header.frame_id = "front_optical"
    msg.format = fmt
    msg.data = enc.tobytes()
    return msg


def wait_status(diag_col, pred, timeout=20.0, suffix="segmentation"):
    """The first segmentation status (from now on) that satisfies ``pred``."""
    seen = len(diag_col.snapshot())
    found = []

    def check(msgs):
        for arr in msgs[seen:]:
            for st in arr.status:
                if st.name.endswith(suffix) and pred(st):
                    found.append(st)
                    return True
        return False

    diag_col.wait_for(check, timeout)
    return found[0] if found else None


def test_compressed_transport_follows_the_image_remap_and_rejects_corrupt_jpeg(ros_domain, peer, colour_model):
    node_remapped = None
    try:
        # remapping 'image' moves '<image>/compressed' with it, as image_transport does
        model, labels = colour_model
        node_remapped = NodeProcess(ros_domain[0], ros_domain[1], params={
            "model": model, "label_file": labels, "grid.enabled": False, "image_transport": "compressed"},
            remaps={"image": "/cam/front/image_raw"})
        outs = subscribe_outputs(peer, ("labels", "road_mask"))
        diag = peer.subscribe(DiagnosticArray, "/diagnostics", RELIABLE)
        pub = peer.publisher(CompressedImage, "/cam/front/image_raw/compressed", BEST_EFFORT)
        assert peer.wait_matched(pub), node_remapped.log()
        rgb = paint_blocks(LAYOUT, 60, 80)  # 360 x 640
        expected = np.kron(layout_ids(LAYOUT), np.ones((60, 80), np.uint8))
        stamp = feed_until(peer, pub, lambda s: compressed_msg(rgb, s, "png"), list(outs.values()))
        lab = next(m for m in outs["labels"].snapshot() if stamp_of(m) == stamp)
        assert lab.header.frame_id == "front_optical"
        np.testing.assert_array_equal(as_array(lab), expected)
        stamp = feed_until(peer, pub, lambda s: compressed_msg(rgb, s + 7, "jpeg"), list(outs.values()))
        lab = next(m for m in outs["labels"].snapshot() if stamp_of(m) == stamp)
        assert (as_array(lab) == expected).mean() > 0.98  # JPEG blurs block edges a little
        # corrupt JPEG: an ERROR naming the problem, nothing published, the node goes on
        bad = compressed_msg(rgb, 1_800_000_000_000_000_000, "jpeg")
        bad.data = bytes(bad.data[:200]) + bytes(5000)
        bad.data = b"\x00" * 64 + bytes(bad.data[64:])
        n_before = len(outs["labels"].snapshot())
        for _ in range(3):
            pub.publish(bad)
            time.sleep(0.1)
        st = wait_status(diag, lambda s: s.level == DiagnosticStatus_ERROR and "cannot decode" in s.message)
        assert st is not None, node_remapped.log()
        assert "cannot decode" in status_values(st)["last error"]
        assert all(stamp_of(m) != stamp_of(bad) for m in outs["labels"].snapshot()[n_before:])
        feed_until(peer, pub, lambda s: compressed_msg(rgb, s + 11, "png"), list(outs.values()))
        assert node_remapped.alive()
    finally:
        if node_remapped is not None:
            assert node_remapped.stop() == 0, node_remapped.log()


DiagnosticStatus_ERROR = b"\x02"
DiagnosticStatus_WARN = b"\x01"
DiagnosticStatus_OK = b"\x00"


@pytest.mark.parametrize("transport_qos", ["best_effort"])
def test_bad_raw_frames_get_an_error_and_nothing_is_published(ros_domain, peer, colour_model, transport_qos):
    node = start_node(ros_domain, colour_model)
    try:
        outs = subscribe_outputs(peer, ("labels",))
        diag = peer.subscribe(DiagnosticArray, "/diagnostics", RELIABLE)
        pub = peer.publisher(Image, "/image", BEST_EFFORT)
        assert peer.wait_matched(pub), node.log()
        rgb = paint_blocks(LAYOUT, 30, 40)  # 180 x 320
        feed_until(peer, pub, lambda s: image_msg(rgb, s), list(outs.values()))
        good = image_msg(rgb, 1_750_000_000_000_000_000)

        def variant(stamp_s, **fields):
            m = image_msg(rgb, stamp_s * 10 ** 9)
            for k, v in fields.items():
                setattr(m, k, v)
            return m

        cases = [
            (variant(1_760_000_001, encoding="32FC1"), "unsupported encoding"),
            (variant(1_760_000_002, data=bytes(good.data[:1000])), "shorter than height*step"),
            (variant(1_760_000_003, height=0, width=0, step=0, data=b""), "zero-size"),
            (variant(1_760_000_004, step=100), "smaller than width*channels"),
        ]
        for bad, needle in cases:
            n_before = len(outs["labels"].snapshot())
            for _ in range(3):
                pub.publish(bad)
                time.sleep(0.05)
            st = wait_status(diag, lambda s: s.level == DiagnosticStatus_ERROR and needle in s.message)
            assert st is not None, (needle, node.log())
            assert all(stamp_of(m) != stamp_of(bad) for m in outs["labels"].snapshot()[n_before:])
        # good frames again: served, and the status returns to OK
        feed_until(peer, pub, lambda s: image_msg(rgb, s + 3), list(outs.values()))
        stop = threading.Event()

        def camera():
            i = 0
            while not stop.is_set():
                pub.publish(image_msg(rgb, 1_795_000_000_000_000_000 + i * 10 ** 8))
                i += 1
                time.sleep(0.1)

        t = threading.Thread(target=camera)
        t.start()
        try:
            assert wait_status(diag, lambda s: s.level == DiagnosticStatus_OK) is not None
        finally:
            stop.set()
            t.join()
        log = node.log()
        assert "unsupported encoding" in log
        # throttled: four bad frames of each kind within seconds give far fewer log lines
        assert log.count("bad image on") < 12
        assert node.alive()
    finally:
        assert node.stop(signal.SIGTERM) == 0, node.log()


def set_params(peer, params: dict, timeout=20.0, atomically=False):
    srv = SetParametersAtomically if atomically else SetParameters
    client = peer.node.create_client(srv, "/camera_seg/set_parameters" + ("_atomically" if atomically else ""))
    assert client.wait_for_service(timeout_sec=timeout)
    req = srv.Request()
    for name, value in params.items():
        pv = ParameterValue()
        if isinstance(value, str):
            pv.type, pv.string_value = ParameterType.PARAMETER_STRING, value
        elif isinstance(value, list):
            pv.type, pv.double_array_value = ParameterType.PARAMETER_DOUBLE_ARRAY, value
        elif isinstance(value, bool):
            pv.type, pv.bool_value = ParameterType.PARAMETER_BOOL, value
        elif isinstance(value, int):
            pv.type, pv.integer_value = ParameterType.PARAMETER_INTEGER, value
        else:
            pv.type, pv.double_value = ParameterType.PARAMETER_DOUBLE, float(value)
        req.parameters.append(Parameter(name=name, value=pv))
    fut = client.call_async(req)
    end = time.monotonic() + timeout
    while not fut.done() and time.monotonic() < end:
        time.sleep(0.05)
    assert fut.done()
    res = fut.result()
    return [res.result] if atomically else res.results


def get_param(peer, name, timeout=20.0):
    client = peer.node.create_client(GetParameters, "/camera_seg/get_parameters")
    assert client.wait_for_service(timeout_sec=timeout)
    fut = client.call_async(GetParameters.Request(names=[name]))
    end = time.monotonic() + timeout
    while not fut.done() and time.monotonic() < end:
        time.sleep(0.05)
    v = fut.result().values[0]
    return {ParameterType.PARAMETER_DOUBLE: v.double_value, ParameterType.PARAMETER_STRING: v.string_value,
            ParameterType.PARAMETER_DOUBLE_ARRAY: list(v.double_array_value)}[v.type]


def test_startup_errors_keep_the_node_running_and_parameters_are_validated(ros_domain, peer, colour_model, tmp_path):
    model, labels = colour_model
    bad_labels = tmp_path / "bad_labels.yaml"
    bad_labels.write_text(TEST_LABEL_YAML.replace("road: [Road]", "road: [Road, Tarmac]"))
    diag = peer.subscribe(DiagnosticArray, "/diagnostics", RELIABLE)
    for params, needle in [({"model": str(tmp_path / "missing.onnx")}, "model file not found"),
                           ({"label_file": str(bad_labels)}, "Tarmac")]:
        node = start_node(ros_domain, colour_model, **params)
        try:
            st = wait_status(diag, lambda s: s.level == DiagnosticStatus_ERROR and needle in s.message, timeout=30)
            assert st is not None, node.log()
            assert node.alive()
            if needle == "Tarmac":
                # parameters: a bad value is rejected with its reason, nothing of the update applies
                res = set_params(peer, {"overlay_alpha": 0.3, "camera_pose.xyz": [1.0, 2.0]}, atomically=True)
                assert not res[0].successful and "camera_pose.xyz must be 3 finite numbers" in res[0].reason
                assert get_param(peer, "overlay_alpha") == 0.5  # not half-applied
                res = set_params(peer, {"overlay_alpha": 1.5})
                assert not res[0].successful and "overlay_alpha" in res[0].reason
                res = set_params(peer, {"model": "/other.onnx"})
                assert not res[0].successful and "read-only" in res[0].reason.lower()
                res = set_params(peer, {"overlay_alpha": 0.8, "camera_pose.xyz": [0.5, 0.0, 1.6]})
                assert all(r.successful for r in res)
                assert get_param(peer, "camera_pose.xyz") == [0.5, 0.0, 1.6]
        finally:
            assert node.stop() == 0, node.log()
    # an invalid value at start: the node refuses to start and says why
    node = start_node(ros_domain, colour_model, backend="openvino")
    try:
        node.proc.wait(30)
        assert node.proc.returncode != 0
        assert "backend must be one of" in node.log()
    finally:
        node.stop()


def test_frames_are_dropped_not_queued_when_the_camera_outruns_inference(ros_domain, peer, tmp_path):
    from models import TEST_LABEL_YAML as LY

    slow = make_colour_model(str(tmp_path / "slow.onnx"), extra_matmuls=40)  # ~50 ms per frame here
    labels = tmp_path / "l.yaml"
    labels.write_text(LY)
    node = NodeProcess(ros_domain[0], ros_domain[1], params={
        "model": slow, "label_file": str(labels), "grid.enabled": False, "num_threads": 1,
        # reliable input: the transport delivers every frame, so every drop is the node's own
        "input_qos.reliability": "reliable"})
    try:
        outs = subscribe_outputs(peer, ("labels",))  # only labels: nothing else is computed
        diag = peer.subscribe(DiagnosticArray, "/diagnostics", RELIABLE)
        pub = peer.publisher(Image, "/image", RELIABLE)
        assert peer.wait_matched(pub), node.log()
        rgb = paint_blocks(LAYOUT, 40, 40)  # 240 x 320
        feed_until(peer, pub, lambda s: image_msg(rgb, s), list(outs.values()))
        n0 = len(outs["labels"].snapshot())
        stamps = [1_790_000_000_000_000_000 + i * 10_000_000 for i in range(60)]
        for s in stamps:
            pub.publish(image_msg(rgb, s))
            time.sleep(0.01)  # ~100 Hz camera, ~10 Hz network
        t_last = time.monotonic()
        # the newest frame is processed ...
        assert outs["labels"].wait_for(lambda m: any(stamp_of(x) == stamps[-1] for x in m), 10.0), node.log()
        settle = time.monotonic() - t_last
        time.sleep(1.0)
        got = [stamp_of(m) for m in outs["labels"].snapshot()[n0:] if stamp_of(m) in stamps]
        # ... most frames were dropped rather than queued, and nothing came after the newest
        assert len(got) < len(stamps) / 2, len(got)
        assert got[-1] == stamps[-1] and got == sorted(got)
        assert settle < 3.0, settle  # no backlog to work through
        st = wait_status(diag, lambda s: int(status_values(s)["frames dropped"]) > 0)
        assert st is not None
        vals = status_values(st)
        assert int(vals["frames dropped"]) >= len(stamps) / 2
        assert "stage inference (ms)" in vals and "stage overlay (ms)" not in vals
        assert all(float(vals[f"stage {w} (ms)"]) >= 0 for w in WAITS), vals  # where frames waited
        assert vals["input reliability"] == "reliable"
        # ~0.7 s of network work in at most two 1 s diagnostics windows: one shows it busy
        busy = [float(status_values(st)["network busy (%)"]) for arr in diag.snapshot()
                for st in arr.status if st.name.endswith("segmentation")]
        assert busy and 25 <= max(busy) <= 100.5, busy
    finally:
        t0 = time.monotonic()
        assert node.stop(signal.SIGTERM) == 0, node.log()
        assert time.monotonic() - t0 < 5.0


def sample_scene_in_test_colours(width=640, height=360):
    """The sample street scene painted in the test model's class colours (so the model's output
    is the scene's ground truth), with its camera."""
    from seg_perception.core.sample import CLASS_ID as SAMPLE_ID, SampleCamera, render_frame

    cam = SampleCamera(width=width, height=height)
    _, truth = render_frame(3, cam)
    to_test = {"Sky": "Sky", "Building": "Building", "Road": "Road", "Pavement": "Sidewalk",
               "Parking": "Parking", "Car": "Car", "Pedestrian": "Person"}
    rgb = np.zeros((height, width, 3), np.uint8)
    for sample_name, test_name in to_test.items():
        rgb[truth == SAMPLE_ID[sample_name]] = COLOR[test_name]
    return cam, rgb


def grid_test_topics(peer):
    """Labels, grid and diagnostics subscriptions; image and CameraInfo publishers."""
    from nav_msgs.msg import OccupancyGrid

    return (subscribe_outputs(peer, ("labels",)),
            peer.subscribe(OccupancyGrid, "/camera_seg/drivable_grid", RELIABLE),
            peer.subscribe(DiagnosticArray, "/diagnostics", RELIABLE),
            peer.publisher(Image, "/image", RELIABLE),
            peer.publisher(CameraInfo, "/camera_info", RELIABLE))


def test_grid_arrives_in_its_frame_and_stops_on_bad_camera_info_while_masks_go_on(ros_domain, peer, colour_model):
    from seg_perception.ros.sample_stream import camera_info_msg

    cam, rgb = sample_scene_in_test_colours()
    node = start_node(ros_domain, colour_model, **{
        "grid.enabled": True, "camera_pose.xyz": list(cam.pose_xyz), "camera_pose.rpy": list(cam.pose_rpy)})
    try:
        outs, grids, diag, pub, ci_pub = grid_test_topics(peer)
        assert peer.wait_matched(pub) and peer.wait_matched(ci_pub), node.log()

        def frame(stamp):
            ci_pub.publish(camera_info_msg(cam, stamp))
            return image_msg(rgb, stamp)

        stamp = feed_until(peer, pub, frame, [outs["labels"], grids])
        g = next(m for m in grids.snapshot() if stamp_of(m) == stamp)
        assert g.header.frame_id == "base_link"
        assert (g.info.width, g.info.height) == (400, 400)
        assert abs(g.info.resolution - 0.1) < 1e-6
        assert (g.info.origin.position.x, g.info.origin.position.y) == (0.0, -20.0)
        cells = np.frombuffer(g.data, np.int8).reshape(400, 400)

        def cell(x, y):
            return cells[int((y + 20.0) / 0.1), int(x / 0.1)]

        assert cell(10.0, 0.0) == 0        # road ahead: drivable
        assert cell(10.0, 3.75) == 100     # pavement strip beside the road: ground, not drivable
        assert cell(0.5, 15.0) == -1       # beside the car, outside the camera's view
        # invalid CameraInfo (K all zero): no grid, ERROR in the grid status, masks go on
        bad = camera_info_msg(cam)
        bad.k = [0.0] * 9
        mode = {"info": "bad"}

        def info(stamp):
            if mode["info"] == "bad":
                return bad
            return camera_info_msg(cam, stamp) if mode["info"] == "good" else None

        camera = Camera(pub, lambda s: image_msg(rgb, s), rate=10.0, info_pub=ci_pub, make_info=info)
        camera.start()
        try:
            st = wait_status(diag, lambda s: s.level == DiagnosticStatus_ERROR, suffix="drivable grid")
            assert st is not None and "CameraInfo" in st.message, node.log()
            t_bad = time.monotonic()
            n_labels = len(outs["labels"].snapshot())
            time.sleep(1.5)
            assert len(outs["labels"].snapshot()) > n_labels  # the masks go on
            late = set(camera.stamps_between(t_bad, time.monotonic()))
            assert not late & {stamp_of(m) for m in grids.snapshot()}
            # CameraInfo stops arriving: after camera_info_timeout (2 s) the grid stops with a WARN
            mode["info"] = "good"
            assert grids.wait_for(lambda m: any(stamp_of(x) > max(late) for x in m), 10), node.log()
            mode["info"] = "none"

            def info_age(s):  # the node's own age of its newest CameraInfo, from a WARN
                found = re.search(r"last one ([0-9.]+) s ago", s.message)
                return float(found.group(1)) if s.level == DiagnosticStatus_WARN and found else None

            st = wait_status(diag, lambda s: info_age(s) is not None, suffix="drivable grid")
            assert st is not None, node.log()
            assert info_age(st) >= 2.0, st.message  # not before the timeout, on the node's clock
            # Under load the node's executor may take CameraInfos late; one taken after that WARN
            # makes the grid fresh again for a while (right: its age counts from when the node
            # saw it). Once the node reports its newest CameraInfo 3 s old, none is left to come:
            # no frame sent from then on may get a grid.
            st = wait_status(diag, lambda s: (info_age(s) or 0.0) >= 3.0, suffix="drivable grid")
            assert st is not None, node.log()
            t_stale = time.monotonic()
            time.sleep(2.0)
            stale = set(camera.stamps_between(t_stale, time.monotonic()))
            assert stale and not stale & {stamp_of(m) for m in grids.snapshot()}
        finally:
            camera.stop()
    finally:
        assert node.stop() == 0, node.log()


def test_min_confidence_changes_at_runtime_over_dds(ros_domain, peer, colour_model):
    """min_confidence.road set while the node runs: a road the model is 61% sure of (a road /
    parking colour blend) is in the road mask at 0 and out of it at 0.7, the next frames on; the
    pedestrian threshold is its own; an out-of-range value is refused with its reason."""
    blend = [round(0.51 * r + 0.49 * p) for r, p in zip(COLOR["Road"], COLOR["Parking"])]
    rgb = np.empty((240, 320, 3), np.uint8)
    rgb[:120], rgb[120:] = COLOR["Sky"], blend
    node = start_node(ros_domain, colour_model, **{"min_confidence.road": 0.0})
    try:
        outs = subscribe_outputs(peer, ("road_mask", "labels"))
        pub = peer.publisher(Image, "/image", RELIABLE)
        assert peer.wait_matched(pub), node.log()

        def road_share(offset_ns):
            stamp = feed_until(peer, pub, lambda s: image_msg(rgb, s + offset_ns), list(outs.values()))
            mask = as_array(next(m for m in outs["road_mask"].snapshot() if stamp_of(m) == stamp))
            labels = as_array(next(m for m in outs["labels"].snapshot() if stamp_of(m) == stamp))
            assert (labels[120:] == CLASS_ID["Road"]).all()  # the class map itself never changes
            return float((mask[120:] == 255).mean())

        assert road_share(0) == 1.0
        res = set_params(peer, {"min_confidence.road": 0.7})
        assert res[0].successful, res[0].reason
        assert road_share(10 ** 12) == 0.0
        assert get_param(peer, "min_confidence.pedestrian") != 0.7
        res = set_params(peer, {"min_confidence.road": 1.5})
        assert not res[0].successful and "min_confidence.road" in res[0].reason
        assert get_param(peer, "min_confidence.road") == 0.7
        res = set_params(peer, {"min_confidence.road": 0.0})
        assert res[0].successful and road_share(2 * 10 ** 12) == 1.0
    finally:
        assert node.stop() == 0, node.log()
