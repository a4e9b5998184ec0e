"""Start the camera_seg node (and optionally RViz).

    ros2 launch seg_perception camera_seg.launch.py image:=/camera/image_raw \
        [camera_info:=/camera/camera_info] [image_transport:=compressed] [model:=/path/model.onnx] \
        [label_file:=/path/labels.yaml] [backend:=onnxruntime] [namespace:=front] [use_sim_time:=true] \
        [rviz:=true]
    ros2 launch seg_perception camera_seg.launch.py multi_camera:=true     # four cameras, one node
    ros2 launch seg_perception camera_seg.launch.py managed:=true [autostart:=false]

managed:=true starts the lifecycle node (camera_seg_lifecycle_node) with a plain Node action;
autostart (the default) is the node's own parameter: it configures and activates itself.
autostart:=false leaves the transitions to a lifecycle manager or to
`ros2 lifecycle set /camera_seg configure`. Not launch_ros' LifecycleNode action and its events:
the ROS adapter thread that action starts in ros2 launch aborted the launch process ('terminate
called without an active exception', exit 134) in 4 of 32 double Ctrl-Cs.

The node gets the packaged Fast DDS profile (64 MB shared memory + UDP, so full-HD frames from a
camera on the same host arrive) unless FASTRTPS_DEFAULT_PROFILES_FILE / FASTDDS_DEFAULT_PROFILES_FILE
is set or RMW_IMPLEMENTATION names another middleware.
"""

import launch.logging
from launch import LaunchDescription
from launch.actions import DeclareLaunchArgument, OpaqueFunction
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
    ("label_file", "", "Label groups of the model's classes (empty: the params file's; there \"\" = the "
                       "packaged file of the model's class set)"),
    ("backend", "", "auto | tensorrt | onnxruntime | torch (empty: the params file's backend)"),
    ("namespace", "", "Namespace of the node (topics become /<namespace>/camera_seg/...)"),
    ("use_sim_time", "false", "Use /clock (true when replaying a bag)"),
    ("rviz", "false", "Also start RViz (rviz/camera_seg.rviz, topics under the node's namespace); "
             "without rviz2 installed: a warning and the node alone"),
    ("multi_camera", "false", "Four cameras on one node: config/multi_camera.yaml over the params file "
                             "(each camera's topics come from it: image and camera_info are not remapped)"),
    ("managed", "false", "Start the lifecycle node camera_seg_lifecycle_node (configure loads the model, "
                        "activate subscribes and publishes)"),
    ("autostart", "true", "With managed:=true: the node configures and activates itself at start "
                          "(false: a lifecycle manager or 'ros2 lifecycle set' does)"),
)


def _true(text: str) -> bool:
    return text.lower() in ("true", "1", "yes")


def launch_setup(context, *args, **kwargs):
    def arg(name: str) -> str:
        return LaunchConfiguration(name).perform(context)

    share = FindPackageShare("seg_perception").perform(context)
    params_files = [arg("params_file") or f"{share}/config/camera_seg.yaml"]
    multi = _true(arg("multi_camera"))
    if multi:  # the four-camera rig over the params file
        params_files.append(f"{share}/config/multi_camera.yaml")
    use_sim_time = _true(arg("use_sim_time"))
    overrides = {"use_sim_time": use_sim_time}
    for name in ("model", "label_file", "backend", "image_transport"):  # empty: keep what the params file says
        if arg(name):
            overrides[name] = arg(name)
    managed = _true(arg("managed"))
    if managed:  # the lifecycle node's transitions: its own (autostart) or a lifecycle manager's
        overrides["autostart"] = _true(arg("autostart"))
    remappings = [] if multi else [("image", arg("image"))]
    if arg("camera_info") and not multi:  # else the node listens beside the image topic
        remappings.append(("camera_info", arg("camera_info")))
    options = dict(
        package="seg_perception",
        name=NODE_NAME,
        namespace=arg("namespace"),
        parameters=params_files + [overrides],
        remappings=remappings,
        # the DDS profile, unless the user chose their own (also through SetEnvironmentVariable)
        additional_env=profile_env(context.environment),
        output="screen",
        emulate_tty=True,
    )
    entities = [Node(executable="camera_seg_lifecycle_node" if managed else "camera_seg_node", **options)]
    if not _true(arg("rviz")):
        return entities
    missing = rviz_missing()  # checked here: a missing package must not fail the launch after the node started
    if missing:
        launch.logging.get_logger("launch.user").warning(f"rviz:=true but {missing}; starting camera_seg alone")
        return entities
    template = f"{share}/rviz/multi_camera.rviz" if multi else f"{share}/rviz/camera_seg.rviz"
    config = write_rviz_config(template, node_fqn(arg("namespace"), NODE_NAME))
    rviz = Node(
        package="rviz2",
        executable="rviz2",
        name="rviz2",
        namespace=arg("namespace"),
        arguments=["-d", config],
        parameters=[{"use_sim_time": use_sim_time}],
        output="screen",
    )
    return entities + [rviz]


def generate_launch_description():
    return LaunchDescription(
        [DeclareLaunchArgument(name, default_value=default, description=doc)
         for name, default, doc in ARGUMENTS]
        + [OpaqueFunction(function=launch_setup)])
