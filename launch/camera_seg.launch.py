"""Start the camera_seg node (and optionally RViz).

    ros2 launch seg_perception camera_seg.launch.py image:=/camera/image_raw \
        [camera_info:=/camera/camera_info] [image_transport:=compressed] [model:=/path/model.onnx] \
        [backend:=onnxruntime] [namespace:=front] [use_sim_time:=true] [rviz:=true]
    ros2 launch seg_perception camera_seg.launch.py multi_camera:=true     # four cameras, one node
    ros2 launch seg_perception camera_seg.launch.py managed:=true [autostart:=false]

managed:=true starts the lifecycle node (camera_seg_lifecycle_node); autostart (the default)
configures and activates it here, autostart:=false leaves that to a lifecycle manager or to
`ros2 lifecycle set /camera_seg configure`.

The node gets the packaged Fast DDS profile (64 MB shared memory + UDP, so full-HD frames from a
camera on the same host arrive) unless FASTRTPS_DEFAULT_PROFILES_FILE / FASTDDS_DEFAULT_PROFILES_FILE
is set or RMW_IMPLEMENTATION names another middleware.
"""

from launch import LaunchDescription
from launch.actions import DeclareLaunchArgument, EmitEvent, LogInfo, OpaqueFunction, RegisterEventHandler
from launch.events import matches_action
from launch.substitutions import LaunchConfiguration
from launch_ros.actions import LifecycleNode, Node
from launch_ros.event_handlers import OnStateTransition
from launch_ros.events.lifecycle import ChangeState
from launch_ros.substitutions import FindPackageShare
from lifecycle_msgs.msg import Transition

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
    ("multi_camera", "false", "Four cameras on one node: config/multi_camera.yaml over the params file "
                             "(each camera's topics come from it: image and camera_info are not remapped)"),
    ("managed", "false", "Start the lifecycle node camera_seg_lifecycle_node (configure loads the model, "
                        "activate subscribes and publishes)"),
    ("autostart", "true", "With managed:=true: configure and activate it at once (false: a lifecycle "
                          "manager or 'ros2 lifecycle set' does)"),
)


def _true(text: str) -> bool:
    return text.lower() in ("true", "1", "yes")


def lifecycle_autostart(node) -> list:
    """configure now, activate once it reached inactive (launch_ros' lifecycle events)."""
    def change(transition_id):
        return EmitEvent(event=ChangeState(lifecycle_node_matcher=matches_action(node), transition_id=transition_id))

    return [RegisterEventHandler(OnStateTransition(target_lifecycle_node=node, start_state="configuring",
                                                   goal_state="inactive",
                                                   entities=[change(Transition.TRANSITION_ACTIVATE)])),
            change(Transition.TRANSITION_CONFIGURE)]


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
    for name in ("model", "backend", "image_transport"):  # empty: keep what the params file says
        if arg(name):
            overrides[name] = arg(name)
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
    if _true(arg("managed")):
        node = LifecycleNode(executable="camera_seg_lifecycle_node", **options)
        entities = [node] + (lifecycle_autostart(node) if _true(arg("autostart")) else [])
    else:
        node = Node(executable="camera_seg_node", **options)
        entities = [node]
    if not _true(arg("rviz")):
        return entities
    missing = rviz_missing()  # checked here: a missing package must not fail the launch after the node started
    if missing:
        return entities + [LogInfo(msg=f"[WARNING] rviz:=true but {missing}; starting camera_seg alone")]
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
