"""The node's parameters as ROS parameter descriptors. The table itself (names, defaults,
ranges, read-only, checks) and the params-file loader are ROS-free: core/parameters.py."""

from __future__ import annotations

from rcl_interfaces.msg import FloatingPointRange, IntegerRange, ParameterDescriptor

from ..core.parameters import SPEC_BY_NAME, SPECS, Spec, check, check_all  # noqa: F401  (re-exported)


def descriptor(spec: Spec) -> ParameterDescriptor:
    d = ParameterDescriptor(description=spec.description, read_only=spec.read_only)
    if spec.choices:
        d.additional_constraints = "one of: " + ", ".join(spec.choices)
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
