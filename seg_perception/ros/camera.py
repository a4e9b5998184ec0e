"""One camera of the camera_seg node on the ROS side: its topics (image_transport's naming), its
input subscriptions with the reliability they match, its publishers and message buffers. Its
frames' slot, turn and counters are the frame runtime's (core/runtime); what a frame becomes,
its pipeline's."""

from __future__ import annotations

import time
from typing import Callable, Dict, List, Optional

from rclpy.node import Node
from rclpy.qos import DurabilityPolicy, HistoryPolicy, QoSProfile, ReliabilityPolicy
from sensor_msgs.msg import CameraInfo, CompressedImage, Image

from .outputs import OutputMessages

RETIRE_S = 2.0  # s a replaced input subscription overlaps the new one (discovery and matching)


class Camera:
    """The single-camera node has one, named "" (topics image / camera_info, outputs under ~/);
    with `cameras`, one per name (topics of its C.image / C.camera_info, outputs under ~/C/)."""

    def __init__(self, name: str) -> None:
        self.name = name
        self.ns = f"{name}/" if name else ""          # its outputs: ~/<ns><output>
        # the output thread publishes each message before it builds the next: buffers are reused
        self.messages = OutputMessages(reuse_buffers=True)
        self.pubs: Dict[str, object] = {}
        self.latest_info = None  # (CameraInfo, monotonic receive time), applied once the model loaded
        self.image_topic = self.info_topic = ""
        self.image_type = Image
        self.transport = "raw"
        self.subs: Dict[str, object] = {}
        self.sub_reliability: Dict[str, str] = {}
        self.retiring: List[tuple] = []  # (replaced subscription, since): destroyed after RETIRE_S
        self.told_waiting = False
        self.last_image_key = None  # (stamp, frame_id) of the last frame, to drop a duplicate

    def label(self, text: str) -> str:
        """'text' for the single camera, 'C: text' for camera C (log lines, status texts)."""
        return f"{self.name}: {text}" if self.name else text

    def resolve_topics(self, node: Node, cfg) -> None:
        """Its input topics from its configuration (core/config.CameraConfig)."""
        self.transport = cfg.transport
        image = resolve(node, cfg.image)
        if self.transport == "compressed":
            # as image_transport does: remapping 'image' moves the compressed topic with it
            self.image_topic, self.image_type = image + "/compressed", CompressedImage
        else:
            self.image_topic, self.image_type = image, Image
        self.info_topic = resolve(node, cfg.camera_info) if self.name else camera_info_topic(node)

    def subscribe(self, node: Node, wanted: str, depth: int, on_image: Callable, on_info: Callable) -> None:
        """(Re)create its input subscriptions with the reliability ``wanted`` asks for.

        auto: reliable when every publisher of the topic offers reliable, else best-effort; with
        no publisher yet there is nothing to match, so the subscription waits for one (made
        best-effort now and reliable a second later, the swap lost frames in flight). A later
        change (another camera joins) makes the new subscription first and retires the old one
        only after RETIRE_S, so no frame falls between them. Reliable where the camera offers
        it: a reliable camera's full-HD frames reach a reliable reader whole, a best-effort reader
        loses many (README, Transport); best-effort is the only choice that matches a best-effort
        camera. Depth stays 1 either way: the newest frame wins, never a backlog."""
        now = time.monotonic()
        for old, since in list(self.retiring):
            if now - since >= RETIRE_S:
                node.destroy_subscription(old)
                self.retiring.remove((old, since))
        for key, topic, msg_type, cb in (("image", self.image_topic, self.image_type, on_image),
                                         ("camera_info", self.info_topic, CameraInfo, on_info)):
            rel = wanted
            if wanted == "auto":
                pubs = node.get_publishers_info_by_topic(topic)
                if not pubs:  # nothing to match yet, or the camera is away: keep what matched it
                    if key == "image" and key not in self.subs and not self.told_waiting:
                        self.told_waiting = True
                        node.get_logger().info(f"{topic}: no publisher yet; subscribing once one appears, "
                                               "with its reliability (input_qos.reliability auto)")
                    continue
                rel = ("reliable" if all(p.qos_profile.reliability == ReliabilityPolicy.RELIABLE
                                         for p in pubs) else "best_effort")
            if self.sub_reliability.get(key) == rel:
                continue
            qos = QoSProfile(history=HistoryPolicy.KEEP_LAST, depth=depth,
                             reliability=(ReliabilityPolicy.RELIABLE if rel == "reliable"
                                          else ReliabilityPolicy.BEST_EFFORT),
                             durability=DurabilityPolicy.VOLATILE)
            old = self.subs.get(key)
            self.subs[key] = node.create_subscription(msg_type, topic, cb, qos)  # the new one first
            if old is not None:
                self.retiring.append((old, now))
            self.sub_reliability[key] = rel
            if wanted == "auto" and key == "image":
                node.get_logger().info(f"{topic}: subscribing {rel.replace('_', '-')} to match its publishers")

    def unsubscribe(self, node: Node) -> None:
        """No input any more (a lifecycle deactivate); subscribe() makes them again."""
        for sub in list(self.subs.values()) + [old for old, _ in self.retiring]:
            node.destroy_subscription(sub)
        self.subs, self.retiring, self.sub_reliability = {}, [], {}
        self.told_waiting = False


def resolve(node: Node, name: str, only_expand: bool = False) -> str:
    try:
        return node.resolve_topic_name(name, only_expand=only_expand)
    except AttributeError:  # very old rclpy: no remapping known here
        from rclpy.expand_topic_name import expand_topic_name

        return expand_topic_name(name, node.get_name(), node.get_namespace())


def camera_info_beside(image_topic: str) -> str:
    """image_transport's convention: a camera's CameraInfo is 'camera_info' in the namespace of
    its image topic (/front/image_raw -> /front/camera_info)."""
    parent = image_topic.rsplit("/", 1)[0]
    return f"{parent}/camera_info"


def camera_info_topic(node: Node) -> str:
    """'camera_info' where it is remapped, else beside the (remapped) image topic, so that
    remapping only 'image' still finds the camera's CameraInfo."""
    info = resolve(node, "camera_info")
    if info != resolve(node, "camera_info", only_expand=True):
        return info
    return camera_info_beside(resolve(node, "image"))
