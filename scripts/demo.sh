#!/usr/bin/env bash
# One command from a fresh clone: set up the runtime environment, then run the node on the
# project's sample camera stream (1920x1080) over real ROS 2 and save what it publishes.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup_env.sh tools  # runtime set + rosbags for the sample drive
export ROS_AUTOMATIC_DISCOVERY_RANGE=${ROS_AUTOMATIC_DISCOVERY_RANGE:-LOCALHOST}
exec .venv/bin/seg-perception demo --out "${1:-demo_output}"
