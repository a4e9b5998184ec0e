"""The fleet commands' plain parts, without Ray: finding bags, the result key, the atomic result
folder, the disagreement counts (core/disagreement) and a drive's figures (core/drive_metrics)."""

from __future__ import annotations

import io
import os

import numpy as np
import pytest

from seg_perception.core import disagreement as dis
from seg_perception.core.drive_metrics import FrameFigures, drive_figures
from seg_perception.tools.support import fleet


def _bag_dir(path):
    os.makedirs(path)
    open(os.path.join(path, "metadata.yaml"), "w").write("rosbag2_bagfile_information: {}\n")
    open(os.path.join(path, "x.db3"), "wb").write(b"not read here")
    return os.path.realpath(path)


def test_find_bags_in_folders_patterns_and_lists(tmp_path):
    a = _bag_dir(str(tmp_path / "drives" / "a"))
    b = _bag_dir(str(tmp_path / "drives" / "2026" / "b"))
    c = str(tmp_path / "loose.mcap")
    open(c, "wb").write(b"mcap")
    (tmp_path / "drives" / ".partial").mkdir()
    _bag_dir(str(tmp_path / "drives" / ".partial" / "hidden"))  # dot-folders are not searched
    assert fleet.find_bags([str(tmp_path / "drives")]) == sorted([a, b])  # a bag's .db3 is not a bag of its own
    # a pattern's folders are searched too
    assert fleet.find_bags([str(tmp_path / "drives" / "*"), c]) == sorted([a, b, os.path.realpath(c)])
    assert fleet.find_bags([str(tmp_path / "drives" / "[a-z]")]) == [a]
    listing = tmp_path / "list.txt"
    listing.write_text(f"# the evening's drives\ndrives/2026/b\n{c}\n\n")
    assert fleet.find_bags([str(listing), b]) == sorted([b, os.path.realpath(c)])  # each once
    with pytest.raises(FileNotFoundError, match="nowhere"):
        fleet.find_bags([str(tmp_path / "nowhere")])


def test_the_key_follows_the_bag_bytes_the_model_and_the_parameters(tmp_path):
    bag = _bag_dir(str(tmp_path / "a"))
    hashes = fleet.ContentHashes(str(tmp_path))
    h1 = hashes.of(bag)
    k = fleet.job_key(h1, "model1", {"overlay_alpha": 0.5})
    assert fleet.job_key(h1, "model1", {"overlay_alpha": 0.5}) == k
    assert fleet.job_key(h1, "model2", {"overlay_alpha": 0.5}) != k
    assert fleet.job_key(h1, "model1", {"overlay_alpha": 0.6}) != k
    with open(os.path.join(bag, "x.db3"), "ab") as f:
        f.write(b"one more message")
    assert hashes.of(bag) != h1  # size and mtime changed: read again
    hashes.save()
    assert fleet.ContentHashes(str(tmp_path)).known == hashes.known


def test_a_result_appears_whole_or_not_at_all(tmp_path):
    out = str(tmp_path)
    final = os.path.join(out, "drive-abc")

    def broken(tmp):
        open(os.path.join(tmp, "half.bin"), "wb").write(b"x")
        raise RuntimeError("the disk is full")

    with pytest.raises(RuntimeError):
        fleet.atomic_result(out, final, broken)
    assert not os.path.exists(final) and not os.listdir(os.path.join(out, fleet.PARTIAL))
    fleet.atomic_result(out, final, lambda tmp: {"status": "done", "frames": 3})
    assert fleet.done_result(final) == {"status": "done", "frames": 3}
    os.makedirs(os.path.join(out, fleet.PARTIAL, "left-by-a-killed-worker"))
    assert fleet.clean_partial(out) == 1 and not os.listdir(os.path.join(out, fleet.PARTIAL))


def test_the_progress_line_never_goes_back():
    stream = io.StringIO()
    p = fleet.FleetProgress(2, 100, stream=stream)
    p.update({"a": (30, 50), "b": (10, 50)})
    p.bag_done("a", 50)                 # done, while the board still shows a at 30
    p.update({"a": (30, 50), "b": (12, 50)})
    assert p.shown == 62
    p.update({"b": (11, 50)})           # a board that lags
    assert p.shown == 62
    p.bag_done("b", 50)
    p.finish()
    assert "bags 2/2" in stream.getvalue() and "100/100" in stream.getvalue()


# ----------------------------------------------------------------------------- the counts

def _masks(index):
    return {g: np.where(index == i + 1, 255, 0).astype(np.uint8) for i, g in enumerate(dis.MASKS)}


def test_disagreement_counts_by_hand():
    # 2 x 10 pixels; A: road on 8, pedestrian on 2; B: road on 6 of A's road, pedestrian on 4
    ia = np.array([[1] * 8 + [2] * 2, [0] * 10], np.uint8)
    ib = np.array([[1] * 6 + [2] * 4, [0] * 10], np.uint8)
    classes_a = ["Road", "Person", "Sky"]
    classes_b = ["road", "person", "tree", "sky"]
    la = np.array([[0] * 8 + [1] * 2, [2] * 10], np.uint8)
    lb = np.array([[0] * 6 + [1] * 4, [3] * 5 + [2] * 5], np.uint8)
    d = dis.Disagreement(classes_a, classes_b)
    assert d.shared == ["Road", "Person", "Sky"] and not d.same_classes
    fig = d.add(_masks(ia), _masks(ib), la, lb, np.full((1, 1), 255, np.uint8), None, t=5.0)
    assert fig.disagreement == pytest.approx(2 / 20)
    assert fig.mask_iou["road"] == pytest.approx(6 / 8) and fig.mask_iou["pedestrian"] == pytest.approx(2 / 4)
    assert fig.mask_iou["parking"] is None  # neither shows parking
    assert fig.shares_a["road"] == pytest.approx(8 / 20) and fig.shares_b["pedestrian"] == pytest.approx(4 / 20)
    assert fig.confidence_a == pytest.approx(1.0) and fig.confidence_b is None
    s = dis.summary(d.counts())
    assert s["rows"]["road"]["iou"] == pytest.approx(0.75) and s["rows"]["road"]["frames_disagree"] == 0.0
    assert s["rows"]["pedestrian"]["frames_disagree"] == 0.0  # IoU 0.5 is not under 0.5
    assert s["rows"]["Sky"]["iou"] == pytest.approx(5 / 10)    # B calls half of A's sky a tree
    # a second frame where they agree everywhere: the fleet adds the counts
    d2 = dis.Disagreement(classes_a, classes_b)
    d2.add(_masks(ia), _masks(ia), la, la.copy(), t=6.0)
    both = dis.summary(dis.combine([d.counts(), d2.counts()]))
    assert both["frames"] == 2 and both["disagreement"] == pytest.approx(2 / 40)
    assert both["rows"]["road"]["iou"] == pytest.approx((6 + 8) / (8 + 8))  # the unions: 8, 8
    heat = np.asarray(both["heat"])
    assert heat.shape == dis.HEAT_SHAPE and heat.max() <= 0.5 + 1e-6 and heat[0].sum() > 0 and heat[-1].sum() == 0


def test_a_drive_s_worst_seconds_and_shares():
    def frame(t, unsure, ahead, near=False):
        return FrameFigures(t, "", 0.8, unsure, ahead, near, {})

    figures = [frame(0.0, 0.1, 0.9), frame(0.5, 0.1, 0.9), frame(1.0, 0.5, 0.9), frame(1.5, 0.4, 0.9),
               frame(2.0, 0.0, 0.1, True), frame(2.5, 0.0, None)]
    d = drive_figures(figures, worst=2)
    assert d.frames == 6
    assert d.unsure == pytest.approx(2 / 6, abs=1e-4)        # more than 30 % unsure
    assert d.no_drivable_ahead == pytest.approx(1 / 5, abs=1e-4)       # of the frames whose grid reaches ahead
    assert d.pedestrian_near == pytest.approx(1 / 6, abs=1e-4)
    # second 2: a frame with no road ahead (as bad as can be) and a fine one; second 1: 45 % unsure
    assert [w["second"] for w in d.worst_seconds] == [2, 1]
    assert d.worst_seconds[0]["badness"] == pytest.approx(0.5) and d.worst_seconds[1]["badness"] == pytest.approx(0.45)
    assert d.worst_seconds[0]["no_drivable_ahead"] and d.worst_seconds[0]["pedestrian_near"]
    assert d.look_first == pytest.approx(2 / 6 + 1 / 5 + 0.5 / 6, abs=1e-3)
    assert drive_figures([]).frames == 0


def test_a_stale_result_folder_is_replaced_and_a_finished_one_kept(tmp_path):
    out = str(tmp_path)
    final = os.path.join(out, "drive-abc")
    os.makedirs(os.path.join(final, "bag"))  # an older run's folder without result.json
    assert fleet.done_result(final) is None
    assert fleet.atomic_result(out, final, lambda tmp: {"status": "done", "n": 1}) == {"status": "done", "n": 1}
    assert fleet.done_result(final) == {"status": "done", "n": 1} and not os.path.exists(os.path.join(final, "bag"))
    # another worker finished the same bag first: its result stays
    assert fleet.atomic_result(out, final, lambda tmp: {"status": "done", "n": 2})["n"] == 1
    assert not [d for d in os.listdir(os.path.join(out, fleet.PARTIAL))]


def test_one_fleet_command_at_a_time_on_a_result_folder(tmp_path):
    lock = fleet.RunLock(str(tmp_path))
    with pytest.raises(RuntimeError, match="another process-bags or compare-bags"):
        fleet.RunLock(str(tmp_path))
    lock.release()
    fleet.RunLock(str(tmp_path)).release()


def test_workers_are_as_many_as_fit_and_never_wait_for_ever():
    cluster = {"CPU": 16.0, "GPU": 1.0}
    assert fleet.worker_count(cluster, None, 1.0, 0.0, 100) == 16
    assert fleet.worker_count(cluster, None, 1.0, 1.0, 100) == 1      # one GPU: one worker
    assert fleet.worker_count(cluster, None, 2.0, 0.0, 3) == 3        # never more than the bags
    with pytest.raises(ValueError, match="do not fit"):
        fleet.worker_count(cluster, 4, 1.0, 1.0, 100)
    with pytest.raises(ValueError, match="asks for 32 CPU"):
        fleet.worker_count(cluster, None, 32.0, 0.0, 100)
