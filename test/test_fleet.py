"""process-bags and compare-bags on a real, embedded Ray over small generated drives: the same
outputs as process-bag, nothing done twice, a killed worker, a corrupt bag and Ctrl-C survived;
and the plain parts (finding bags, result keys, atomic results, the counts) without Ray."""

from __future__ import annotations

import glob
import json
import os
import signal
import subprocess
import sys
import threading
import time

import numpy as np
import pytest

from bag_helpers import decoded_by_topic, run_cli

pytest.importorskip("ray")

CLI = os.path.join(os.path.dirname(sys.executable), "seg-perception")
TIMEOUT = 600


def fleet_cli(*argv, wait=True, **kw):
    env = dict(os.environ, PYTHONUNBUFFERED="1")
    proc = subprocess.Popen([CLI, *argv], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env,
                            start_new_session=True, **kw)
    if not wait:
        return proc
    out, err = proc.communicate(timeout=TIMEOUT)
    return proc.returncode, out, err


def sample_drive(path, frames=12, start=1_700_000_000, rig=False, width=160, height=120):
    argv = ["sample-bag", str(path), "--frames", str(frames), "--width", str(width), "--height", str(height),
            "--start", str(start)] + (["--rig"] if rig else [])
    code, _, err = run_cli(argv)
    assert code == 0, err
    return str(path)


def model_args(colour_model):
    model, labels = colour_model
    return ["-p", f"model:={model}", "-p", f"label_file:={labels}"]


def results_of(out_dir):
    return {os.path.basename(json.load(open(p))["bag"]): json.load(open(p))
            for p in glob.glob(os.path.join(out_dir, "*", "result.json"))}


def no_partial(out_dir):
    partial = os.path.join(out_dir, ".partial")
    return not os.path.isdir(partial) or not os.listdir(partial)


# ----------------------------------------------------------------------------- on Ray

def test_process_bags_writes_what_process_bag_writes_and_a_rerun_does_nothing(tmp_path, colour_model):
    from seg_perception.core.config import NodeConfig
    from seg_perception.core.outputs import OUTPUTS
    from seg_perception.tools.process_bag import process_bag

    bags = tmp_path / "drives"
    nested = bags / "day2"
    nested.mkdir(parents=True)
    sample_drive(bags / "morning", start=1_700_000_000)
    sample_drive(nested / "evening", start=1_700_003_600, frames=8)
    out = str(tmp_path / "out")
    code, stdout, err = fleet_cli("process-bags", str(bags), "--out", out, "--workers", "2", *model_args(colour_model))
    assert code == 0, stdout + err
    assert "2 processed now, 0 done before, 0 failed" in stdout and "2 worker(s), Ray embedded" in stdout
    assert "bags 2/2" in err  # the progress line over bags and frames
    results = results_of(out)
    assert set(results) == {"morning", "evening"}

    model, labels = colour_model
    cfg = NodeConfig.from_values({"model": model, "label_file": labels})
    for name, bag in (("morning", bags / "morning"), ("evening", nested / "evening")):
        alone = str(tmp_path / f"alone_{name}")
        stats = process_bag(str(bag), alone, cfg, list(OUTPUTS), show_progress=False)
        r = results[name]
        assert r["status"] == "done" and r["frames"] == stats["frames_processed"] > 0
        assert decoded_by_topic(os.path.join(r["result"], "bag")) == decoded_by_topic(alone), name  # message for message
        frames = [json.loads(line) for line in open(os.path.join(r["result"], "frames.jsonl"))]
        assert len(frames) == r["frames"] and r["drive"]["frames"] == r["frames"]
    report = open(os.path.join(out, "fleet_report.md")).read()
    assert "morning" in report and "evening" in report and "worst seconds" in report

    mtimes = {p: os.stat(p).st_mtime_ns for p in glob.glob(os.path.join(out, "*", "result.json"))}
    code, stdout, err = fleet_cli("process-bags", str(bags), "--out", out, *model_args(colour_model))
    assert code == 0, stdout + err
    assert "0 processed now, 2 done before, 0 failed" in stdout
    assert "Ray" not in stdout  # nothing to do: no Ray started
    assert {p: os.stat(p).st_mtime_ns for p in glob.glob(os.path.join(out, "*", "result.json"))} == mtimes

    # other parameters are another result; the old one stays
    code, stdout, err = fleet_cli("process-bags", str(bags / "morning"), "--out", out, *model_args(colour_model),
                                  "-p", "overlay_alpha:=0.3", "--quiet")
    assert code == 0 and "1 processed now" in stdout, stdout + err
    assert len(glob.glob(os.path.join(out, "morning-*", "result.json"))) == 2


def test_process_bags_rig_with_its_map_equals_process_bag(tmp_path, colour_model):
    from seg_perception.core.config import NodeConfig
    from seg_perception.core.outputs import OUTPUTS
    from seg_perception.tools.process_bag import process_bag
    from seg_perception.tools.support.node_process import shipped_params_file

    rig_params = os.path.join(os.path.dirname(shipped_params_file()), "multi_camera.yaml")
    bag = sample_drive(tmp_path / "rig", frames=6, rig=True)
    out = str(tmp_path / "out")
    extra = ["-p", "map.enabled:=true"]
    code, stdout, err = fleet_cli("process-bags", bag, "--out", out, "--params-file", rig_params, "--quiet",
                                  *model_args(colour_model), *extra)
    assert code == 0, stdout + err
    (r,) = results_of(out).values()
    model, labels = colour_model
    alone = str(tmp_path / "alone")
    stats = process_bag(bag, alone, NodeConfig.load(rig_params, [f"model:={model}", f"label_file:={labels}",
                                                                 "map.enabled:=true"]), list(OUTPUTS), show_progress=False)
    assert r["frames"] == stats["frames_processed"] == 4 * 6
    written = decoded_by_topic(os.path.join(r["result"], "bag"))
    assert written == decoded_by_topic(alone)
    assert "/camera_seg/drivable_map" in written and "/camera_seg/front/labels" in written


def _watch_and_kill(out_dir, stop, killed):
    """Kill the worker (SIGKILL, as the OOM killer would) once, when a readable bag's output is
    half-written (an output bag in .partial: a bag that cannot be read never gets one)."""
    while not stop.is_set():
        if glob.glob(os.path.join(out_dir, ".partial", "*", "bag", "*")):
            time.sleep(0.3)
            if subprocess.run(["pkill", "-9", "-f", "ray::BagWorker"]).returncode == 0:
                killed.append(time.monotonic())
                return
        time.sleep(0.05)


def test_a_killed_worker_and_a_corrupt_bag_are_survived(tmp_path, colour_model):
    bags = tmp_path / "drives"
    bags.mkdir()
    for i in range(3):
        sample_drive(bags / f"drive{i}", frames=30, start=1_700_000_000 + 100 * i, width=320, height=240)
    (bags / "corrupt.db3").write_bytes(b"SQLite format 3\x00" + os.urandom(4000))
    truncated = bags / "truncated"
    sample_drive(truncated, frames=5, start=1_700_009_000)
    db = glob.glob(str(truncated / "*.db3"))[0]
    with open(db, "r+b") as f:
        f.truncate(os.path.getsize(db) // 3)
    out = str(tmp_path / "out")
    stop, killed = threading.Event(), []
    watcher = threading.Thread(target=_watch_and_kill, args=(out, stop, killed), daemon=True)
    watcher.start()
    try:
        code, stdout, err = fleet_cli("process-bags", str(bags), "--out", out, "--workers", "1", "--quiet",
                                      *model_args(colour_model))
    finally:
        stop.set()
        watcher.join()
    assert killed, "the worker was never seen mid-bag"
    assert code == 1, stdout + err  # not all succeeded
    results = results_of(out)
    assert {n for n, r in results.items() if r["status"] == "done"} == {"drive0", "drive1", "drive2"}
    assert "3 processed now, 0 done before, 2 failed" in stdout, stdout
    assert "its worker died 1 time(s); done on a new one" in stdout
    assert "corrupt.db3" in stdout and "truncated" in stdout and "cannot read bag" in stdout
    assert no_partial(out)
    assert "corrupt.db3" in open(os.path.join(out, "fleet_report.md")).read()


def test_ctrl_c_leaves_no_partial_result_and_a_rerun_resumes(tmp_path, colour_model):
    bags = tmp_path / "drives"
    bags.mkdir()
    for i in range(3):
        sample_drive(bags / f"drive{i}", frames=40, start=1_700_000_000 + 100 * i, width=320, height=240)
    out = str(tmp_path / "out")
    proc = fleet_cli("process-bags", str(bags), "--out", out, "--workers", "1", "--quiet",
                     *model_args(colour_model), wait=False)
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline and proc.poll() is None:
        partial = os.path.join(out, ".partial")
        if os.path.isdir(partial) and os.listdir(partial):
            break
        time.sleep(0.05)
    time.sleep(0.5)
    os.killpg(proc.pid, signal.SIGINT)  # Ctrl-C at a terminal: the whole process group
    stdout, err = proc.communicate(timeout=120)
    assert proc.returncode == 130, stdout + err
    assert "interrupted" in stdout
    assert no_partial(out)
    for d in glob.glob(os.path.join(out, "drive*")):  # what is there is whole
        assert os.path.isfile(os.path.join(d, "result.json")), d
    done_first = len(results_of(out))
    assert done_first < 3
    code, stdout, err = fleet_cli("process-bags", str(bags), "--out", out, "--quiet", *model_args(colour_model))
    assert code == 0, stdout + err
    assert f"{3 - done_first} processed now, {done_first} done before" in stdout
    assert len(results_of(out)) == 3


def test_compare_bags_report_and_mious(tmp_path, colour_model):
    bags = tmp_path / "drives"
    bags.mkdir()
    sample_drive(bags / "a", frames=6)
    sample_drive(bags / "b", frames=6, start=1_700_000_500)
    out = str(tmp_path / "cmp")
    code, _, err = fleet_cli("compare-bags", str(bags), "--out", out, *model_args(colour_model))
    assert code == 2 and "nothing to compare" in err
    code, _, err = fleet_cli("compare-bags", str(bags), "--out", out, *model_args(colour_model),
                             "--b", "overlay_alpha:=0.5", "--a", "overlay_alpha:=0.5")
    assert code == 2 and "same parameters" in err
    # one model at two settings: B leaves road it is less than 99 % sure of out of the road mask
    code, stdout, err = fleet_cli("compare-bags", str(bags), "--out", out, *model_args(colour_model),
                                  "--b", "min_confidence.road:=0.99", "--workers", "2", "--quiet")
    assert code == 0, stdout + err
    report = json.load(open(os.path.join(out, "report.json")))
    fleet = report["fleet"]
    assert fleet["frames"] == 12 and len(report["drives"]) == 2
    rows = fleet["rows"]
    assert rows["road"]["share_b"] < rows["road"]["share_a"] and rows["road"]["iou"] < 1.0
    assert rows["pedestrian"]["iou"] in (None, 1.0) and all(  # the class maps are the same
        r["iou"] in (None, 1.0) for r in rows.values() if r["kind"] == "class")
    md = open(os.path.join(out, "report.md")).read()
    assert "road mask" in md and "pictures/where.png" in md
    for w in report["worst"]:
        assert os.path.isfile(os.path.join(out, w["picture"])), w


def test_compare_bags_with_an_evaluation_folder(tmp_path, colour_model):
    from test_evaluate import EXPECTED_MIOU, MAPPING_YAML, write_camvid

    root = tmp_path / "tiny"
    write_camvid(root)
    mapping = tmp_path / "mapping.yaml"
    mapping.write_text(MAPPING_YAML)
    bags = tmp_path / "drives"
    bags.mkdir()
    sample_drive(bags / "a", frames=4)
    out = str(tmp_path / "cmp")
    args = ["compare-bags", str(bags), "--out", out, *model_args(colour_model), "--b", "min_confidence.road:=0.99",
            "--eval", str(root), "--quiet"]
    code, stdout, err = fleet_cli(*args)  # the colour model's classes need the folder's mapping
    assert code == 2 and "--eval-mapping" in err and not os.path.exists(os.path.join(out, "report.md"))
    code, stdout, err = fleet_cli(*args, "--eval-mapping", str(mapping))
    assert code == 0, stdout + err
    ev = json.load(open(os.path.join(out, "report.json")))["evaluation"]
    assert ev["a"]["miou"] == pytest.approx(EXPECTED_MIOU) and ev["b"]["miou"] == pytest.approx(EXPECTED_MIOU)
    assert "| mIoU |" in open(os.path.join(out, "report.md")).read()
