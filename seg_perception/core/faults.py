"""Fault injection for tests of the running node (issue #7): honest failures in the real
pipeline, switched from outside the process.

When the environment variable SEG_PERCEPTION_FAULT_FILE names a file, every inference first
reads that file (if it exists): the word ``fail`` makes that inference raise InjectedFault, as a
backend error would. Unset (as always in production) nothing is installed and nothing is read.
"""

from __future__ import annotations

import os
from typing import Callable, Optional

ENV_VAR = "SEG_PERCEPTION_FAULT_FILE"


class InjectedFault(RuntimeError):
    """An inference failure injected by a test."""


def fault_hook_from_env() -> Optional[Callable[[object], None]]:
    path = os.environ.get(ENV_VAR)
    if not path:
        return None

    def hook(_frame) -> None:
        try:
            with open(path, "r", encoding="utf-8") as f:
                command = f.read().strip()
        except FileNotFoundError:
            return
        if command == "fail":
            raise InjectedFault(f"injected inference failure ({ENV_VAR}={path})")

    return hook
