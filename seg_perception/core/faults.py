"""Fault injection for tests of the running node (issue #7): honest failures in the real
pipeline, switched from outside the process.

When the environment variable SEG_PERCEPTION_FAULT_FILE names a file, every inference first
reads that file (if it exists): the word ``fail`` makes that inference raise InjectedFault, as a
backend error would; ``crash <thread>`` / ``crash-once <thread>`` make a worker thread of the
node fail outside its per-frame handling (see worker_fault_from_env). Unset (as always in
production) nothing is installed and nothing is read.
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


def worker_fault_from_env() -> Optional[Callable[[str], None]]:
    """A hook each worker thread of the node calls with its name as it takes an item, outside its
    per-frame error handling: ``crash <name>`` makes that thread raise InjectedFault every time
    (a bug, as the node sees it), ``crash-once <name>`` once (the file is emptied). None unless
    SEG_PERCEPTION_FAULT_FILE is set."""
    path = os.environ.get(ENV_VAR)
    if not path:
        return None

    def hook(thread_name: str) -> None:
        try:
            with open(path, "r", encoding="utf-8") as f:
                command = f.read().split()
        except FileNotFoundError:
            return
        if len(command) == 2 and command[0] in ("crash", "crash-once") and command[1] == thread_name:
            if command[0] == "crash-once":
                open(path, "w").close()
            raise InjectedFault(f"injected crash of the {thread_name} thread ({ENV_VAR}={path})")

    return hook
