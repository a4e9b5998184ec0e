"""Files that ship inside the Python package (found the same way after pip or colcon install)."""

from __future__ import annotations

import os

DATA_DIR = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "data")
DEFAULT_MODEL = os.path.join(DATA_DIR, "models", "camvid_parking_lraspp.onnx")
DEFAULT_CHECKPOINT = os.path.join(DATA_DIR, "models", "camvid_parking_lraspp.pt")
DEFAULT_LABEL_FILE = os.path.join(DATA_DIR, "labels", "camvid_parking.yaml")
FASTDDS_PROFILE = os.path.join(DATA_DIR, "fastdds_shm_udp.xml")
