"""The node's parameters declared with ROS parameter descriptors. The table (names, defaults,
ranges, read-only, checks) is ROS-free, core/parameters.py; the typed configuration the
declared values are parsed into, core/config.py."""

from __future__ import annotations

from typing import Any, Dict, List

from rcl_interfaces.msg import FloatingPointRange, IntegerRange, ParameterDescriptor

from ..core.config import NodeConfig
from ..core.parameters import SPECS, Spec, camera_parameters, spec_of


def descriptor(spec: Spec) -> ParameterDescriptor:
    d = ParameterDescriptor(description=spec.description, read_only=spec.read_only)
    if spec.allowed():
        d.additional_constraints = "one of: " + ", ".join(spec.allowed())
    if spec.length:
        d.additional_constraints = f"{spec.length} finite numbers"
    if spec.range is not None:
        lo, hi = spec.range
        if isinstance(spec.default, bool):
            pass
        elif isinstance(spec.default, int):
            d.integer_range = [IntegerRange(from_value=int(lo), to_value=int(hi), step=0)]
        else:
            d.floating_point_range = [FloatingPointRange(from_value=float(lo), to_value=float(hi), step=0.0)]
    return d


def plain_value(value: Any) -> Any:
    """A parameter value as the core table holds it: number arrays as lists of floats."""
    if isinstance(value, (list, tuple)) or type(value).__name__ == "array":
        return [float(x) for x in value]
    return value


def _declare_cameras(node, spec: Spec) -> List[str]:
    """Declare ``cameras`` read-only, with a value even when empty: rclpy's get_parameters
    service answers nothing at all when one name asked for has no value, so ros2 param dump and
    rqt_reconfigure would get nothing.

    rclpy cannot declare an empty string array (it types ``[]`` as a byte array), and rcl reads
    ``cameras: []`` in a params file (as ros2 param dump writes it) as no value. So a first,
    dynamically typed declaration reads what was given, and is replaced by the read-only one:
    the names as a string array, or an empty array. Public API in Humble and Jazzy."""
    from rclpy.parameter import Parameter

    given = node.declare_parameter(spec.name, [], ParameterDescriptor(dynamic_typing=True))
    if given.type_ == Parameter.Type.STRING_ARRAY:
        names = [str(c) for c in given.value]
    elif given.type_ == Parameter.Type.NOT_SET or (given.type_ == Parameter.Type.BYTE_ARRAY and not given.value):
        names = []  # not given, or an empty list
    else:
        raise ValueError(f"cameras must be a list of camera names, got {given.value!r}")
    node.undeclare_parameter(spec.name)  # allowed: the first declaration is not read-only
    node.declare_parameter(spec.name, names, descriptor(spec), ignore_override=True)
    return names


def declare_node_parameters(node) -> NodeConfig:
    """Declare the table's parameters on ``node`` (and each camera's own, defaulting to the
    node-wide ones) with their descriptors; returns them parsed (core/config.NodeConfig). Raises
    ValueError (ConfigError) with the reason for an invalid set."""
    values: Dict[str, object] = {}
    for spec in SPECS:
        if spec.name == "cameras":
            values[spec.name] = _declare_cameras(node, spec)
            continue
        values[spec.name] = plain_value(node.declare_parameter(spec.name, spec.default, descriptor(spec)).value)
    for name in values["cameras"]:
        for key, default in camera_parameters(name, values).items():
            values[key] = plain_value(node.declare_parameter(key, default, descriptor(spec_of(key))).value)
    return NodeConfig.from_values(values)
