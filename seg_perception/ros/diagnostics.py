"""The node's diagnostics as diagnostic_msgs (what is counted: core/runtime/stats.py)."""

from __future__ import annotations

from typing import Dict, List

from diagnostic_msgs.msg import DiagnosticArray, DiagnosticStatus, KeyValue

OK, WARN, ERROR = DiagnosticStatus.OK, DiagnosticStatus.WARN, DiagnosticStatus.ERROR


# core/runtime/stats levels as diagnostic_msgs levels
LEVEL = {"ok": OK, "warn": WARN, "error": ERROR}


def make_status(name: str, hardware_id: str, level: bytes, message: str,
                values: Dict[str, object]) -> DiagnosticStatus:
    st = DiagnosticStatus()
    st.name, st.hardware_id, st.level, st.message = name, hardware_id, level, message
    st.values = [KeyValue(key=k, value=str(v)) for k, v in values.items()]
    return st


def make_array(stamp, statuses: List[DiagnosticStatus]) -> DiagnosticArray:
    arr = DiagnosticArray()
    arr.header.stamp = stamp
    arr.status = statuses
    return arr


def level(name: str) -> bytes:
    return LEVEL[name]
