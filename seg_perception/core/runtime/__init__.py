"""The frame runtime (no ROS): camera slots, fair order, just-in-time prepare, batching and runs
at once, worker supervision and a stats snapshot (runtime.py); the one-slot mailboxes
(slots.py), the network's busy clocks (clocks.py), the counters (stats.py), the run plan
(plan.py)."""
