#!/usr/bin/env bash
# One command from a fresh clone: set up the development environment and run the whole suite.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup_env.sh dev
# tf2 / tf2_ros from the vendored Jazzy sources (no wheels): the TF tests run against the real thing
bash scripts/build_tf2.sh .venv
export ROS_AUTOMATIC_DISCOVERY_RANGE=LOCALHOST
exec .venv/bin/python -m pytest "$@"
