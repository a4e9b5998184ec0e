"""Start the camera_seg node (and optionally RViz).

    ros2 launch seg_perception camera_seg.launch.py image:=/camera/image_raw \
        [camera_info:=/camera/camera_info] [image_transport:=compressed] [model:=/path/model.onnx] \
        [backend:=onnxruntime] [namespace:=front] [use_sim_time:=true] [rviz:=true]

The node gets the packaged Fast DDS profile (64 MB shared memory + UDP, so full-HD frames from a
camera on the same host arrive) unless FASTRTPS_DEFAULT_PROFILES_FILE / FASTDDS_DEFAULT_PROFILES_FILE
is set or RMW_IMPLEMENTATION names another middleware.
"""

from launch import LaunchDescription
from launch.actions import DeclareLaunchArgument, LogInfo, OpaqueFunction
from launch.substitutions import LaunchConfiguration
from launch_ros.actions import Node
from launch_ros.substitutions import FindPackageShare

from seg_perception.ros.dds_profile import profile_env
from seg_perception.ros.rviz_setup import node_fqn, rviz_missing, write_rviz_config

NODE_NAME = "camera_seg"

ARGUMENTS = (
    ("image", "/camera/image_raw", "Camera image topic (raw transport; '/compressed' is appended for compressed)"),
    ("camera_info", "", "CameraInfo topic (empty: camera_info beside the image topic, as image_transport does)"),
    ("image_transport", "", "raw | compressed (empty: the params file's transport)"),
    ("params_file", "", "Parameters file (empty: the package's config/camera_seg.yaml)"),
    ("model", "", "Model file .onnx/.engine/.pt (empty: the params file's model)"),
    ("backend", "", "auto | tensorrt | onnxruntime | torch (empty: the params file's backend)"),
    ("namespace", "", "Namespace of the node (topics become /<namespace>/camera_seg/...)"),
    ("use_sim_time", "false", "Use /clock (true when replaying a bag)"),
    ("rviz", "false", "Also start RViz (rviz/camera_seg.rviz, topics under the node's namespace); "
             "without rviz2 installed: a warning and the node alone"),
)


def launch_setup(context, *args, **kwargs):
    def arg(name: str) -> str:
        return LaunchConfiguration(name).perform(context)

    share = FindPackageShare("seg_perception").perform(context)
    params_file = arg("params_file") or f"{share}/config/camera_seg.yaml"
    use_sim_time = arg("use_sim_time").lower() in ("true", "1", "yes")
    overrides = {"use_sim_time": use_sim_time}
    for name in ("model", "backend", "image_transport"):  # empty: keep what the params file says
        if arg(name):
            overrides[name] = arg(name)
    remappings = [("image", arg("image"))]
    if arg("camera_info"):  # else the node listens beside the image topic
        remappings.append(("camera_info", arg("camera_info")))
    node = Node(
        package="seg_perception",
        executable="camera_seg_node",
        name=NODE_NAME,
        namespace=arg("namespace"),
        parameters=[params_file, overrides],
        remappings=remappings,
        # the DDS profile, unless the user chose their own (also through SetEnvironmentVariable)
        additional_env=profile_env(context.environment),
        output="screen",
        emulate_tty=True,
    )
    if arg("rviz").lower() not in ("true", "1", "yes"):
        return [node]
    missing = rviz_missing()  # checked here: a missing package must not fail the launch after the node started
    if missing:
        return [node, LogInfo(msg=f"[WARNING] rviz:=true but {missing}; starting camera_seg alone")]
    config = write_rviz_config(f"{share}/rviz/camera_seg.rviz", node_fqn(arg("namespace"), NODE_NAME))
    rviz = Node(
        package="rviz2",
        executable="rviz2",
        name="rviz2",
        namespace=arg("namespace"),
        arguments=["-d", config],
        parameters=[{"use_sim_time": use_sim_time}],
        output="screen",
    )
    return [node, rviz]


def generate_launch_description():
    return LaunchDescription(
        [DeclareLaunchArgument(name, default_value=default, description=doc)
         for name, default, doc in ARGUMENTS]
        + [OpaqueFunction(function=launch_setup)])
