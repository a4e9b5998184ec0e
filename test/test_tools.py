"""The README's main command and the pipeline benchmark run end to end (small sizes)."""

import json
import os
import subprocess
import sys


BIN = os.path.dirname(sys.executable)


def test_demo_replays_the_sample_drive_into_the_node(tmp_path, ros_domain):
    out = tmp_path / "demo"
    res = subprocess.run([os.path.join(BIN, "seg-perception"), "demo", "--out", str(out), "--width", "640",
                          "--height", "360", "--frames", "15", "--domain-id",
                          str(ros_domain[0])], capture_output=True, text=True, timeout=240)
    assert res.returncode == 0, res.stdout[-3000:] + res.stderr[-3000:]
    summary = json.loads((out / "summary.json").read_text())
    assert all(n > 0 for n in summary["outputs_received"].values()), summary
    for name in ("demo.png", "overlay.png", "road_mask.png", "drivable_grid.png", "drivable_map.png"):
        assert (out / name).stat().st_size > 0
    assert summary["grid"]["cells"] == 400 * 400
    # the sample drive moves and records its odometry: the map in odom knows more than one grid
    m = summary["map"]
    assert m["frame"] == "odom" and m["cells"] == 600 * 600 and m["drivable"] > 1000
    assert summary["frames_published"] == 15
    assert (out / "sample_drive" / "metadata.yaml").is_file()


def test_pipeline_benchmark_prints_every_stage(tmp_path, ros_domain):
    js = tmp_path / "bench.json"
    env = dict(os.environ, ROS_DOMAIN_ID=str(ros_domain[0]))
    res = subprocess.run([os.path.join(BIN, "seg-perception"), "bench", "--size", "640x360", "--frames", "3",
                          "--warmup", "1", "--json", str(js)], capture_output=True, text=True, timeout=240, env=env)
    assert res.returncode == 0, res.stderr[-3000:]
    result = json.loads(js.read_text())
    assert {"convert", "preprocess", "inference", "postprocess", "overlay", "grid", "to_msg",
            "publish"} <= set(result["stages_ms"])
    assert "frames per second" in res.stdout


def test_pipeline_benchmark_keeps_camera_info_fresh_and_refuses_a_grid_that_did_not_run(tmp_path, ros_domain):
    """CameraInfo comes with every frame, as from a camera, so frames over more than
    camera_info_timeout all get their grid; a grid that did not run is not reported as a stage
    time (it would be that of a skipped grid: 0.03 ms instead of 2.6 ms)."""
    env = dict(os.environ, ROS_DOMAIN_ID=str(ros_domain[0]))
    cmd = [os.path.join(BIN, "seg-perception"), "bench", "--size", "640x360", "--warmup", "1", "--no-publish"]
    js = tmp_path / "fresh.json"
    res = subprocess.run(cmd + ["--frames", "12", "-p", "camera_info_timeout:=0.2", "--json", str(js)],
                         capture_output=True, text=True, timeout=240, env=env)
    assert res.returncode == 0 and "CameraInfo" not in res.stderr, res.stderr[-3000:]
    result = json.loads(js.read_text())
    assert result["total_ms"]["median"] * 12 > 200  # the timed frames outlast the timeout
    assert "grid" in result["stages_ms"]
    js = tmp_path / "stale.json"
    res = subprocess.run(cmd + ["--frames", "2", "-p", "camera_info_timeout:=0.000001", "--json", str(js)],
                         capture_output=True, text=True, timeout=240, env=env)
    assert res.returncode == 1 and "the grid did not run on 2 of 2" in res.stderr, res.stdout + res.stderr
    assert "frames per second" not in res.stdout and not js.exists()


def _bench_node(kind, tmp_path, ros_domain, *extra):
    js = tmp_path / f"{kind}.json"
    res = subprocess.run([os.path.join(BIN, "seg-perception"), "bench", kind, "--size", "640x360",
                          "--warmup", "2", "--domain-id", str(ros_domain[0]), "--json", str(js), *extra],
                         capture_output=True, text=True, timeout=240)
    assert res.returncode == 0, res.stdout[-3000:] + res.stderr[-3000:]
    return json.loads(js.read_text()), res.stdout


def test_node_benchmark_compares_the_node_with_bare_inference(tmp_path, ros_domain):
    result, out = _bench_node("node", tmp_path, ros_domain, "--seconds", "4")
    node = result["node"]
    assert result["bare"]["fps"] > 0 and node["frames"] > 0
    assert result["ratio"] == node["fps"] / result["bare"]["fps"]
    # the node's own account of its network, read from /diagnostics during the run
    assert 0 < node["network_busy_percent_median"] <= 100.5 and node["inference_ms_median"] > 0
    assert "node / bare" in out and "inference" in node["stages_ms_median"]


def test_overload_benchmark_counts_drops_and_latency(tmp_path, ros_domain):
    result, out = _bench_node("overload", tmp_path, ros_domain, "--seconds", "5")
    assert 0 < result["processed"] < result["published"]  # at twice its capacity the node drops frames
    assert result["dropped_reported"] > 0
    lat = result["latency_ms"]
    assert 0 < lat["p50"] <= lat["p99"] <= lat["max"] and result["inference_ms_median"] > 0
    assert "p99 / inference" in out


def test_cameras_benchmark_measures_one_node_against_one_node_per_camera(tmp_path, ros_domain):
    js = tmp_path / "cameras.json"
    res = subprocess.run([os.path.join(BIN, "seg-perception"), "bench", "cameras", "--cameras", "2", "--size",
                          "320x180", "--seconds", "3", "--warmup", "1", "--domain-id", str(ros_domain[0]),
                          "--json", str(js)], capture_output=True, text=True, timeout=300)
    assert res.returncode == 0, res.stdout[-3000:] + res.stderr[-3000:]
    result = json.loads(js.read_text())
    assert result["one"]["processes"] == 1 and result["many"]["processes"] == 2
    for setup in ("one", "many"):
        r = result[setup]
        assert r["capacity_fps"] > 0 and r["rss_mb_total"] > 0
        assert set(r["per_camera"]) == {"cam0", "cam1"}
        assert all(0 < v["processed"] <= v["published"] for v in r["per_camera"].values()), r
    assert result["one"]["frames_per_network_run"] >= 1.0
    # where the frames' time went in each setup, from the nodes' diagnostics
    for setup in ("one", "many"):
        st = result[setup]["stages_ms_median"]
        assert {"wait for prepare", "wait for network", "wait for outputs", "inference"} <= set(st), st
    assert res.stdout.count("a frame in the node (medians, ms): wait for prepare") == 2
    assert result["throughput_ratio"] == result["one"]["capacity_fps"] / result["many"]["capacity_fps"]
    assert "throughput" in res.stdout and "memory" in res.stdout


def test_cameras_benchmark_summarizes_repeated_pairs_against_the_targets():
    from seg_perception.tools.bench_cameras import compare, summarize

    def setup(fps, rss, p99s, inference):
        return {"capacity_fps": fps, "rss_mb_total": rss, "inference_ms_median": inference,
                "per_camera": {f"cam{i}": {"p99_ms": v} for i, v in enumerate(p99s)}}
    pairs = [compare(setup(40.0, 500.0, [150.0, 210.0], 80.0), setup(50.0, 1400.0, [200.0, 200.0], 70.0)),
             compare(setup(55.0, 480.0, [190.0, None], 80.0), setup(50.0, 1200.0, [200.0, 200.0], 70.0)),
             compare(setup(45.0, 450.0, [260.0, 100.0], 80.0), setup(45.0, 1500.0, [200.0, 200.0], 70.0))]
    assert pairs[0] == {"throughput_ratio": 0.8, "memory_ratio": 500.0 / 1400.0, "one_p99_over_inference": 210.0 / 80.0}
    s = summarize(pairs)
    assert s["throughput_ratio"]["values"] == [0.8, 1.1, 1.0]
    assert (s["throughput_ratio"]["min"], s["throughput_ratio"]["median"], s["throughput_ratio"]["max"]) == (0.8, 1.0, 1.1)
    assert s["throughput_ratio"]["met"] == 2 and s["memory_ratio"]["met"] == 3
    assert s["one_p99_over_inference"]["values"] == [2.625, 2.375, 3.25] and s["one_p99_over_inference"]["met"] == 1


def test_cameras_benchmark_says_when_its_capacity_phase_did_not_saturate():
    from seg_perception.tools.bench_cameras import saturation_warning

    assert saturation_warning(40.0, 4, 30.0) == ""  # 10 of 30 Hz a camera: the node was the limit
    assert "raise --saturate-hz" in saturation_warning(50.0, 4, 15.0)  # 12.5 of 15 Hz: the cameras were


def test_demo_with_the_four_camera_rig_shows_the_surround_grid(tmp_path, ros_domain):
    out = tmp_path / "demo_rig"
    res = subprocess.run([os.path.join(BIN, "seg-perception"), "demo", "--rig", "--out", str(out), "--width", "320",
                          "--height", "180", "--frames", "15", "--domain-id", str(ros_domain[0])],
                         capture_output=True, text=True, timeout=300)
    assert res.returncode == 0, res.stdout[-3000:] + res.stderr[-3000:]
    summary = json.loads((out / "summary.json").read_text())
    assert all(n > 0 for n in summary["outputs_received"].values()), summary
    assert {"left/overlay", "right/overlay", "rear/overlay"} <= set(summary["outputs_received"])
    # the surround grid of config/multi_camera.yaml (60 x 60 m around base_link) knows ahead and behind
    assert summary["grid"]["cells"] == 600 * 600 and summary["grid"]["frame"] == "base_link"
    assert summary["grid"]["drivable"] > 5000
    assert (out / "demo.png").stat().st_size > 0


def test_the_sample_rig_is_the_rig_of_the_shipped_multi_camera_config():
    import math

    from seg_perception.core.config import complete, read_params_file
    from seg_perception.core.sample import sample_rig

    p = complete(read_params_file(os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))),
                                          "config", "multi_camera.yaml")))
    rig = sample_rig()
    assert list(rig) == p["cameras"]
    for name, cam in rig.items():
        assert list(cam.pose_xyz) == [float(v) for v in p[f"{name}.camera_pose.xyz"]]
        assert all(math.isclose(a, float(b)) for a, b in zip(cam.pose_rpy, p[f"{name}.camera_pose.rpy"]))


def run_gpu_bench_script(out, ros_domain, *args, **env):
    """scripts/gpu_bench_cameras.sh run OUT on this machine's CPU with two cameras (rclpy already
    here: no wheels to install): (the finished process, its gpu_bench.log)."""
    repo = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    env = dict(os.environ, DEVICE="cpu", PYTHON=sys.executable, CAMERAS="2", ITERS="5", ROS_DOMAIN_ID=str(ros_domain[0]), **env)
    res = subprocess.run(["bash", os.path.join(repo, "scripts", "gpu_bench_cameras.sh"), "run", str(out), *args],
                         capture_output=True, text=True, timeout=300, env=env)
    log_file = out / "gpu_bench.log"
    return res, log_file.read_text() if log_file.exists() else ""


def test_gpu_bench_script_runs_its_steps_on_the_cpu(tmp_path, ros_domain):
    """scripts/gpu_bench_cameras.sh as the device runs it (rclpy already here: no wheels to
    install), on the CPU with two cameras and one-second phases: the network alone at batch 1
    and 4, then bench cameras with the torch backend, where the one node takes both cameras'
    frames in one run, and the node logs of this run beside the results."""
    import tarfile

    out = tmp_path / "OUT"
    res, log = run_gpu_bench_script(out, ros_domain, REPEAT="1", PHASE_SECONDS="1", WARMUP="1",
                                    SATURATE_HZ="20", CPU_BENCH="0")
    assert res.returncode == 0, res.stdout[-3000:] + res.stderr[-3000:]
    assert log.rstrip().endswith("gpu_bench_cameras.sh: done")
    assert "ONNX Runtime" in log and "CPU cores" in log  # what the host has, before any step
    runs = json.loads((out / "network.json").read_text())["runs"]
    assert sorted((r["backend"], r["batch"]) for r in runs) == [("torch", 1), ("torch", 4)]
    cams = json.loads((out / "cameras_torch.json").read_text())
    assert cams["one"]["frames_per_network_run"] > 1.5  # torch runs one batch at a time: both cameras
    assert cams["many"]["processes"] == 2 and cams["throughput_ratio"] > 0
    assert not (out / "cameras_onnxruntime.json").exists()
    with tarfile.open(out / "node_logs.tar.gz") as tar:
        names = tar.getnames()
        one = [n for n in names if "_one_" in n]
        assert len(names) == 3 and len(one) == 1, names  # this run's three nodes only
        assert "backend torch" in tar.extractfile(one[0]).read().decode()


def test_gpu_bench_script_runs_every_step_when_one_fails_and_exits_non_zero(tmp_path, ros_domain):
    """One scarce GPU session for the whole script: a failing step (here: a parameter the node
    refuses, passed to both bench cameras steps) leaves the others to run, and the script names
    the failures and exits 1."""
    out = tmp_path / "OUT"
    res, log = run_gpu_bench_script(out, ros_domain, "-p", "max_batch:=-5")
    assert res.returncode == 1, log
    assert (out / "network.json").exists()  # the step before the failures ran
    assert "== bench cameras: ONNX Runtime" in log  # and the one after the first failure
    assert log.rstrip().splitlines()[-1].startswith("gpu_bench_cameras.sh: 2 step(s) failed: bench cameras: torch")
