"""Every parameter the node declares has a value, read over its real parameter services as
`ros2 param dump`, rqt_reconfigure and launch read them (all names in one request: rclpy answers
nothing at all when one of them has no value), and a dump in `ros2 param dump`'s format, loaded
back as a params file, starts the same node."""

from __future__ import annotations

import time

import pytest
import yaml
from rcl_interfaces.msg import ParameterType
from rcl_interfaces.srv import GetParameters, ListParameters

from ros_harness import NodeProcess

NODE = "/camera_seg"


def call(peer, srv, name: str, request, timeout: float = 30.0):
    client = peer.node.create_client(srv, f"{NODE}/{name}")
    try:
        assert client.wait_for_service(timeout_sec=timeout), f"no {NODE}/{name} service"
        fut = client.call_async(request)
        end = time.monotonic() + timeout
        while not fut.done() and time.monotonic() < end:
            time.sleep(0.05)
        assert fut.done(), f"{NODE}/{name} did not answer"
        return fut.result()
    finally:
        peer.node.destroy_client(client)


def python_value(v):
    """A ParameterValue as ros2 param dump writes it (ros2param.api.get_value)."""
    t = ParameterType
    return {t.PARAMETER_BOOL: lambda: v.bool_value, t.PARAMETER_INTEGER: lambda: v.integer_value,
            t.PARAMETER_DOUBLE: lambda: v.double_value, t.PARAMETER_STRING: lambda: v.string_value,
            t.PARAMETER_BYTE_ARRAY: lambda: list(v.byte_array_value),
            t.PARAMETER_BOOL_ARRAY: lambda: list(v.bool_array_value),
            t.PARAMETER_INTEGER_ARRAY: lambda: list(v.integer_array_value),
            t.PARAMETER_DOUBLE_ARRAY: lambda: list(v.double_array_value),
            t.PARAMETER_STRING_ARRAY: lambda: list(v.string_array_value)}[v.type]()


def every_parameter(peer) -> dict:
    """name -> value of every parameter the node lists, asked for in one request."""
    names = sorted(call(peer, ListParameters, "list_parameters", ListParameters.Request()).result.names)
    assert names
    values = call(peer, GetParameters, "get_parameters", GetParameters.Request(names=names)).values
    assert len(values) == len(names), "get_parameters answered nothing: a parameter has no value"
    unset = [n for n, v in zip(names, values) if v.type == ParameterType.PARAMETER_NOT_SET]
    assert not unset, f"declared without a value: {unset}"
    return {n: python_value(v) for n, v in zip(names, values)}


def dump(values: dict) -> dict:
    """What `ros2 param dump /camera_seg` writes: the dotted names nested, under the node."""
    nested: dict = {}
    for name, value in values.items():
        *path, leaf = name.split(".")
        d = nested
        for part in path:
            d = d.setdefault(part, {})
        d[leaf] = value
    return {NODE: {"ros__parameters": nested}}


def wait_parameters(peer, node) -> dict:
    end = time.monotonic() + 60
    while True:
        try:
            return every_parameter(peer)
        except AssertionError:
            if time.monotonic() > end or not node.alive():
                raise
            time.sleep(0.5)


@pytest.mark.parametrize("executable,cameras", [("camera_seg_node", None),
                                                ("camera_seg_lifecycle_node", None),
                                                ("camera_seg_node", ["front", "left"])])
def test_every_parameter_has_a_value_and_a_dump_starts_the_same_node(ros_domain, peer, colour_model,
                                                                     tmp_path, executable, cameras):
    model, labels = colour_model
    params = [f"model:={model}", f"label_file:={labels}", "grid.enabled:=false"]
    if cameras:
        params.append(f"cameras:=[{', '.join(cameras)}]")
    node = NodeProcess(ros_domain[0], ros_domain[1], params=params, executable=executable)
    try:
        first = wait_parameters(peer, node)
    finally:
        assert node.stop() == 0, node.log()
    assert first["cameras"] == (cameras or [])
    assert first["model"] == model and first["grid.enabled"] is False
    if cameras:
        assert first["left.image"] == "left/image_raw"

    dumped = tmp_path / "dump.yaml"
    dumped.write_text(yaml.safe_dump(dump(first), default_flow_style=False))
    node = NodeProcess(ros_domain[0], ros_domain[1], params_file=str(dumped), executable=executable)
    try:
        again = wait_parameters(peer, node)
    finally:
        assert node.stop() == 0, node.log()
    assert again == first
