"""The package as a ROS 2 user gets it: colcon builds and installs it, the ament index finds its
share files, and the launch file names only things that exist and are installed.

`ros2 launch` itself (launch / launch_ros) is not installable here, so the launch file is checked
statically: it parses, and every executable, file, argument and parameter it names is real."""

import ast
import os
import shutil
import subprocess
import sys
import xml.etree.ElementTree as ET

import pytest

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
LAUNCH = os.path.join(REPO, "launch", "camera_seg.launch.py")


@pytest.fixture(scope="module")
def colcon_install(tmp_path_factory):
    colcon = os.path.join(os.path.dirname(sys.executable), "colcon")
    if not os.path.exists(colcon):
        colcon = shutil.which("colcon")
    assert colcon, "colcon is part of the development set (requirements/dev.txt)"
    ws = tmp_path_factory.mktemp("ws")
    (ws / "src").mkdir()
    os.symlink(REPO, ws / "src" / "seg_perception")
    res = subprocess.run([colcon, "build", "--base-paths", "src", "--build-base", "build",
                          "--install-base", "install"], cwd=ws, capture_output=True, text=True, timeout=300)
    assert res.returncode == 0, res.stdout + res.stderr
    return ws / "install" / "seg_perception"


def test_colcon_installs_share_files_found_through_the_ament_index(colcon_install):
    code = ("from ament_index_python.packages import get_package_share_directory as g;"
            "print(g('seg_perception'))")
    env = dict(os.environ, AMENT_PREFIX_PATH=str(colcon_install))
    share = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True,
                           check=True).stdout.strip()
    assert os.path.realpath(share) == os.path.realpath(colcon_install / "share" / "seg_perception")
    for rel in ("package.xml", "launch/camera_seg.launch.py", "config/camera_seg.yaml", "rviz/camera_seg.rviz"):
        assert os.path.isfile(os.path.join(share, rel)), rel
    lib = colcon_install / "lib" / "seg_perception"
    assert os.access(lib / "camera_seg_node", os.X_OK) and os.access(lib / "seg-perception", os.X_OK)
    site = next((colcon_install / "lib").glob("python3*/site-packages/seg_perception"))
    # the files the node needs at run time are inside the installed Python package
    for rel in ("data/models/camvid_parking_lraspp.onnx", "data/labels/camvid_parking.yaml",
                "data/fastdds_shm_udp.xml"):
        assert (site / rel).is_file(), rel


def test_package_xml_is_format_3_ament_python_with_the_real_dependencies():
    root = ET.parse(os.path.join(REPO, "package.xml")).getroot()
    assert root.get("format") == "3" and root.findtext("name") == "seg_perception"
    assert root.find("export/build_type").text == "ament_python"
    deps = {e.text for e in root if e.tag in ("depend", "exec_depend")}
    for dep in ("rclpy", "sensor_msgs", "nav_msgs", "std_msgs", "diagnostic_msgs", "rcl_interfaces",
                "launch", "launch_ros", "python3-numpy", "python3-opencv", "python3-yaml", "tf2_ros", "tf2_msgs"):
        assert dep in deps, dep
    # every ROS message package the code imports is declared
    imported = set()
    for dirpath, _, files in os.walk(os.path.join(REPO, "seg_perception")):
        for f in files:
            if f.endswith(".py"):
                for node in ast.walk(ast.parse(open(os.path.join(dirpath, f)).read())):
                    if isinstance(node, ast.ImportFrom) and node.module and node.module.endswith(".msg"):
                        imported.add(node.module.split(".")[0])
    assert imported and imported <= deps, imported - deps
    # the vehicle install stays lean: RViz and Qt only where a person looks (README)
    assert "rviz2" not in deps


def _launch_tree():
    return ast.parse(open(LAUNCH).read())


def _calls(tree, name):
    return [n for n in ast.walk(tree) if isinstance(n, ast.Call) and getattr(n.func, "id", None) == name]


def _kw(call, name):
    return next((k.value for k in call.keywords if k.arg == name), None)


def test_launch_file_names_only_real_executables_files_arguments_and_parameters(colcon_install):
    tree = _launch_tree()
    compile(tree, LAUNCH, "exec")
    # the lifecycle node too is started by a plain Node action: launch_ros' LifecycleNode action
    # starts a ROS adapter thread in ros2 launch that aborted it on a double Ctrl-C (exit 134)
    assert not _calls(tree, "LifecycleNode") and "launch_ros.events" not in open(LAUNCH).read()
    nodes = _calls(tree, "Node")
    exes = {c.value for n in nodes for c in ast.walk(_kw(n, "executable"))
            if isinstance(c, ast.Constant) and isinstance(c.value, str)}
    assert {"camera_seg_node", "camera_seg_lifecycle_node", "rviz2"} <= exes
    lib = colcon_install / "lib" / "seg_perception"
    for exe in exes - {"rviz2"}:
        assert (lib / exe).exists(), exe
    # both camera_seg executables take the same options: package and NODE_NAME
    options = next(n for n in _calls(tree, "dict") if _kw(n, "package") is not None)
    assert _kw(options, "package").value == "seg_perception" and _kw(options, "name").id == "NODE_NAME"
    assert any(isinstance(n, ast.Assign) and n.targets[0].id == "NODE_NAME" and n.value.value == "camera_seg"
               for n in tree.body)
    # the share files it refers to are installed
    share = colcon_install / "share" / "seg_perception"
    for rel in ("config/camera_seg.yaml", "config/multi_camera.yaml", "rviz/camera_seg.rviz", "rviz/multi_camera.rviz"):
        assert rel in open(LAUNCH).read() and (share / rel).is_file()
    # the launch arguments the README promises
    ns = {}
    exec(compile(ast.Module(body=[n for n in tree.body if isinstance(n, ast.Assign)
                                  and n.targets[0].id == "ARGUMENTS"], type_ignores=[]), LAUNCH, "exec"), ns)
    names = {a[0] for a in ns["ARGUMENTS"]}
    assert names == {"image", "camera_info", "image_transport", "params_file", "model", "label_file", "backend",
                     "namespace", "use_sim_time", "rviz", "multi_camera", "managed", "autostart"}
    # every parameter it may override is one the node declares (use_sim_time is rclpy's own)
    from seg_perception.core.parameters import MANAGED_SPECS, SPEC_BY_NAME

    overridden = {"use_sim_time"}
    for n in ast.walk(tree):
        if isinstance(n, ast.For) and isinstance(n.iter, ast.Tuple):
            overridden |= {e.value for e in n.iter.elts}
        if (isinstance(n, ast.Subscript) and isinstance(n.ctx, ast.Store) and getattr(n.value, "id", "") == "overrides"
                and isinstance(n.slice, ast.Constant)):
            overridden.add(n.slice.value)
    assert {"model", "label_file", "backend", "image_transport", "autostart"} <= overridden
    assert overridden - {"use_sim_time"} <= set(SPEC_BY_NAME) | {s.name for s in MANAGED_SPECS}
    # the module it imports exists without rclpy or launch
    from seg_perception.ros.dds_profile import profile_env

    assert callable(profile_env)


def test_the_node_path_needs_neither_torch_nor_rosbags():
    """On the vehicle the node runs with the runtime set: building its pipeline with the ONNX
    Runtime backend must not import torch, torchvision, onnx, rosbags or Ray (tools only)."""
    code = (
        "import sys\n"
        "import seg_perception.ros.node\n"
        "from seg_perception.core.config import NodeConfig\n"
        "from seg_perception.core.pipeline import build_pipeline\n"
        "p = build_pipeline(NodeConfig.from_values({}))\n"
        "heavy = sorted(m for m in ('torch', 'torchvision', 'onnx', 'rosbags', 'ray') if m in sys.modules)\n"
        "print(p.segmenter.backend.name, heavy)\n"
        "sys.exit(1 if heavy else 0)\n")
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert res.returncode == 0, res.stdout + res.stderr
    assert res.stdout.startswith("onnxruntime []")


def test_ray_is_in_the_fleet_set_only():
    def pins(name):
        lines = open(os.path.join(REPO, "requirements", name)).read().splitlines()
        return {ln.split("==")[0].strip() for ln in lines if ln.strip() and not ln.startswith(("#", "-r"))}

    assert "ray" in pins("fleet.txt")
    assert "ray" not in pins("runtime.txt") | pins("tools.txt")


def test_readme_documents_every_parameter_and_launch_argument():
    import re

    from seg_perception.core.parameters import MANAGED_SPECS, SPECS

    readme = open(os.path.join(REPO, "README.md")).read()
    documented = set()
    for row in re.findall(r"^\| (`[^|]+)\|", readme, flags=re.M):  # first cell of table rows
        documented |= set(re.findall(r"`([a-z_.]+)`", row))
    missing = sorted(s.name for s in SPECS + MANAGED_SPECS if s.name not in documented)
    assert not missing, f"parameters missing from the README: {missing}"
    for arg in ("image", "camera_info", "image_transport", "params_file", "model", "label_file", "backend",
                "namespace", "use_sim_time", "rviz", "multi_camera", "managed", "autostart"):
        assert f"`{arg}`" in readme, arg
