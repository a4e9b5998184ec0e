import os
import sys

import pytest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import atexit
import shutil
import tempfile

# ROS logs of the test process go to a temporary folder, removed when the tests end (tests that
# start nodes give each a folder of its own, under pytest's tmp_path); discovery stays on this host.
if "ROS_LOG_DIR" not in os.environ:
    _log_dir = tempfile.mkdtemp(prefix="seg_perception_roslog_")
    os.environ["ROS_LOG_DIR"] = _log_dir
    atexit.register(shutil.rmtree, _log_dir, ignore_errors=True)
os.environ["ROS_AUTOMATIC_DISCOVERY_RANGE"] = "LOCALHOST"
# The test process is a plain camera-side participant: no DDS profile of ours.
os.environ.pop("FASTRTPS_DEFAULT_PROFILES_FILE", None)
os.environ.pop("FASTDDS_DEFAULT_PROFILES_FILE", None)


@pytest.fixture
def ros_domain(tmp_path):
    """(domain id, log dir) owned by this test alone."""
    from ros_harness import DomainLease

    lease = DomainLease()
    log_dir = tmp_path / "ros_log"
    log_dir.mkdir()
    os.environ["ROS_LOG_DIR"] = str(log_dir)
    os.environ["ROS_AUTOMATIC_DISCOVERY_RANGE"] = "LOCALHOST"
    yield lease.domain_id, str(log_dir)
    lease.release()


@pytest.fixture
def peer(ros_domain):
    from ros_harness import RosPeer

    p = RosPeer(ros_domain[0])
    yield p
    p.close()


@pytest.fixture
def colour_model(tmp_path):
    """(model path, label file path) of the nearest-colour test model, 60x80 stretch."""
    from models import TEST_LABEL_YAML, make_colour_model

    model = make_colour_model(str(tmp_path / "colour.onnx"))
    labels = tmp_path / "colour_labels.yaml"
    labels.write_text(TEST_LABEL_YAML)
    return model, str(labels)


def pytest_collection_modifyitems(config, items):
    """Tests over real DDS (a ROS domain of their own) are marked ``ros``: ``-m "not ros"`` runs
    the plain-pytest core and tool tests alone, the quick loop while changing core code."""
    for item in items:
        if "ros_domain" in getattr(item, "fixturenames", ()):
            item.add_marker(pytest.mark.ros)
