"""`seg-perception sample-bag OUT`: the project's sample drive (core.sample) as a rosbag2 bag.

Topics, all at 10 Hz from a fixed start time (so the same command always writes the same bag):

- /camera/image_raw (sensor_msgs/Image, rgb8), or with --compressed
  /camera/image_raw/compressed (sensor_msgs/CompressedImage, JPEG) as image_transport names it;
- /camera/camera_info (sensor_msgs/CameraInfo) with the sample camera's intrinsics, same stamps;
- /tf_static (tf2_msgs/TFMessage, transient-local): base_link -> camera_link (the camera's mount:
  1.5 m up, pitched 0.08 rad down) and camera_link -> camera_optical_frame (REP 103), recorded
  once at the start;
- /odom (nav_msgs/Odometry) and /tf odom -> base_link: the vehicle driving straight at 8 m/s,
  with each frame's stamp.

With --images, real frames (image files) take the painted ones' place: a short drive from a
folder of photos, to look at a model on real streets through process-bag or compare-bags.

Messages are built and serialised with rosbags' typestore: no ROS install is needed.
"""

from __future__ import annotations

import math
import sys
import time
from typing import Dict, Tuple

import numpy as np

IMAGE_TOPIC = "/camera/image_raw"
COMPRESSED_TOPIC = IMAGE_TOPIC + "/compressed"
CAMERA_INFO_TOPIC = "/camera/camera_info"
TF_STATIC_TOPIC = "/tf_static"
TF_TOPIC = "/tf"
ODOM_TOPIC = "/odom"
ODOM_FRAME = "odom"
BASE_FRAME = "base_link"
CAMERA_FRAME = "camera_link"
OPTICAL_FRAME = "camera_optical_frame"
DEFAULT_START_S = 1_700_000_000  # 2023-11-14: a fixed, obviously recorded (not wall-clock) time
# camera body frame (x forward, y left, z up) -> optical frame (x right, y down, z forward)
OPTICAL_RPY = (-math.pi / 2.0, 0.0, -math.pi / 2.0)


def add_arguments(p) -> None:
    from ..core.bagio import STORAGES

    p.add_argument("out", help="bag directory to create")
    p.add_argument("--storage", choices=STORAGES, default="sqlite3",
                   help="rosbag2 storage format (default sqlite3)")
    p.add_argument("--frames", type=int, default=100, help="frames at 10 Hz (default 100: a 10 s drive)")
    p.add_argument("--width", type=int, default=640, help="image width (default 640)")
    p.add_argument("--height", type=int, default=360, help="image height (default 360)")
    p.add_argument("--compressed", action="store_true",
                   help=f"JPEG sensor_msgs/CompressedImage on {COMPRESSED_TOPIC} instead of raw rgb8")
    p.add_argument("--jpeg-quality", type=int, default=90, help="JPEG quality with --compressed (default 90)")
    p.add_argument("--start", type=float, default=float(DEFAULT_START_S),
                   help=f"time of the first frame, s since the epoch (default {DEFAULT_START_S})")
    p.add_argument("--overwrite", action="store_true", help="replace OUT if it is an existing bag")
    p.add_argument("--images", nargs="+", metavar="IMAGE", help="real frames instead of the painted drive: "
                   "image files (or glob patterns) in name order, one a frame, at their own size (the "
                   "first one's); CameraInfo of a pinhole camera of --hfov, no distortion")
    p.add_argument("--hfov", type=float, default=90.0, help="horizontal field of view of --images, degrees "
                   "(default 90)")
    p.add_argument("--rig", action="store_true",
                   help="four cameras (front, left, right, rear: the rig of config/multi_camera.yaml) on "
                        "/<camera>/image_raw and /<camera>/camera_info")


def quaternion_from_rpy(roll: float, pitch: float, yaw: float) -> Tuple[float, float, float, float]:
    """(x, y, z, w) of R = Rz(yaw) Ry(pitch) Rx(roll), as tf2's setRPY."""
    cr, sr = math.cos(roll / 2), math.sin(roll / 2)
    cp, sp = math.cos(pitch / 2), math.sin(pitch / 2)
    cy, sy = math.cos(yaw / 2), math.sin(yaw / 2)
    return (sr * cp * cy - cr * sp * sy, cr * sp * cy + sr * cp * sy,
            cr * cp * sy - sr * sp * cy, cr * cp * cy + sr * sp * sy)


class _Messages:
    """rosbags message objects for the sample drive."""

    def __init__(self) -> None:
        from ..core.bagio import typestore

        self.t = typestore().types

    def header(self, stamp_ns: int, frame_id: str):
        sec, nsec = divmod(int(stamp_ns), 10 ** 9)
        return self.t["std_msgs/msg/Header"](
            stamp=self.t["builtin_interfaces/msg/Time"](sec=sec, nanosec=nsec), frame_id=frame_id)

    def image(self, rgb: np.ndarray, stamp_ns: int, frame: str = OPTICAL_FRAME):
        h, w = rgb.shape[:2]
        return self.t["sensor_msgs/msg/Image"](
            header=self.header(stamp_ns, frame), height=h, width=w, encoding="rgb8",
            is_bigendian=0, step=w * 3, data=np.ascontiguousarray(rgb).reshape(-1))

    def compressed(self, rgb: np.ndarray, stamp_ns: int, quality: int, frame: str = OPTICAL_FRAME):
        import cv2

        ok, buf = cv2.imencode(".jpg", cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR),
                               [cv2.IMWRITE_JPEG_QUALITY, int(quality)])
        if not ok:
            raise RuntimeError("OpenCV could not encode a JPEG")
        return self.t["sensor_msgs/msg/CompressedImage"](
            header=self.header(stamp_ns, frame), format="rgb8; jpeg compressed bgr8",
            data=buf.reshape(-1).astype(np.uint8))

    def camera_info(self, fields: Dict[str, object], stamp_ns: int, frame: str = OPTICAL_FRAME):
        roi = self.t["sensor_msgs/msg/RegionOfInterest"](x_offset=0, y_offset=0, height=0, width=0,
                                                         do_rectify=False)
        return self.t["sensor_msgs/msg/CameraInfo"](
            header=self.header(stamp_ns, frame), height=int(fields["height"]),
            width=int(fields["width"]), distortion_model=str(fields["distortion_model"]),
            d=np.asarray(fields["d"], np.float64), k=np.asarray(fields["k"], np.float64),
            r=np.asarray(fields["r"], np.float64), p=np.asarray(fields["p"], np.float64),
            binning_x=0, binning_y=0, roi=roi)

    def odometry(self, stamp_ns: int, x: float, speed: float):
        """base_link in odom, driving along x (the sample camera's street)."""
        t = self.t
        pose = t["geometry_msgs/msg/Pose"](position=t["geometry_msgs/msg/Point"](x=float(x), y=0.0, z=0.0),
                                           orientation=t["geometry_msgs/msg/Quaternion"](x=0.0, y=0.0, z=0.0, w=1.0))
        twist = t["geometry_msgs/msg/Twist"](linear=t["geometry_msgs/msg/Vector3"](x=float(speed), y=0.0, z=0.0),
                                             angular=t["geometry_msgs/msg/Vector3"](x=0.0, y=0.0, z=0.0))
        cov = np.zeros(36, np.float64)
        return t["nav_msgs/msg/Odometry"](
            header=self.header(stamp_ns, ODOM_FRAME), child_frame_id=BASE_FRAME,
            pose=t["geometry_msgs/msg/PoseWithCovariance"](pose=pose, covariance=cov),
            twist=t["geometry_msgs/msg/TwistWithCovariance"](twist=twist, covariance=cov.copy()))

    def transform(self, stamp_ns: int, parent: str, child: str, xyz, rpy):
        q = quaternion_from_rpy(*rpy)
        tr = self.t["geometry_msgs/msg/Transform"](
            translation=self.t["geometry_msgs/msg/Vector3"](x=float(xyz[0]), y=float(xyz[1]), z=float(xyz[2])),
            rotation=self.t["geometry_msgs/msg/Quaternion"](x=q[0], y=q[1], z=q[2], w=q[3]))
        return self.t["geometry_msgs/msg/TransformStamped"](header=self.header(stamp_ns, parent),
                                                            child_frame_id=child, transform=tr)

    def tf(self, transforms):
        return self.t["tf2_msgs/msg/TFMessage"](transforms=list(transforms))


def rig_topics(name: str, compressed: bool = False) -> Dict[str, str]:
    """A camera's topics and frames in the sample bag: the single camera's ("") or a rig camera's."""
    if not name:
        return {"image": COMPRESSED_TOPIC if compressed else IMAGE_TOPIC, "camera_info": CAMERA_INFO_TOPIC,
                "link": CAMERA_FRAME, "optical": OPTICAL_FRAME}
    return {"image": f"/{name}/image_raw" + ("/compressed" if compressed else ""),
            "camera_info": f"/{name}/camera_info", "link": f"{name}_link", "optical": f"{name}_optical_frame"}


def write_sample_bag(out: str, storage: str = "sqlite3", frames: int = 100, width: int = 640,
                     height: int = 360, compressed: bool = False, jpeg_quality: int = 90,
                     start_ns: int = DEFAULT_START_S * 10 ** 9, overwrite: bool = False,
                     progress=None, rig: bool = False, images=None, hfov_deg: float = 90.0) -> Dict[str, object]:
    """Write the sample drive; returns what was written (topics, counts, camera). ``rig``: the
    four cameras of config/multi_camera.yaml (front, left, right, rear) instead of one.
    ``images``: RGB frames (HxWx3 uint8, all one size) to write instead of the painted ones."""
    from ..core import bagio
    from ..core.sample import SampleCamera, camera_info_dict, render_frame, sample_rig

    if frames < 1:
        raise ValueError(f"--frames must be at least 1, got {frames}")
    if width < 16 or height < 16:
        raise ValueError(f"image size must be at least 16x16, got {width}x{height}")
    if images is not None:
        if rig:
            raise ValueError("--images are one camera's frames; --rig paints four cameras")
        if not images:
            raise ValueError("--images: no image")
        height, width = images[0].shape[:2]
        frames = len(images)
    cams = sample_rig(width, height) if rig else {"": SampleCamera(width=width, height=height, hfov_deg=hfov_deg)}
    cam = next(iter(cams.values()))
    period_ns = int(round(1e9 / cam.rate))
    m = _Messages()
    camera_qos = bagio.TopicQos("reliable", "volatile", "keep_last", 10)
    image_type = bagio.COMPRESSED_IMAGE if compressed else bagio.IMAGE
    topics = {name: rig_topics(name, compressed) for name in cams}
    with bagio.BagWriter(out, storage, overwrite=overwrite) as bag:
        tf_conn = bag.add_topic(TF_STATIC_TOPIC, bagio.TF_MESSAGE,
                                bagio.TopicQos("reliable", "transient_local", "keep_last", 1))
        conns = {name: (bag.add_topic(t["image"], image_type, camera_qos),
                        bag.add_topic(t["camera_info"], bagio.CAMERA_INFO, camera_qos)) for name, t in topics.items()}
        odom_conn = bag.add_topic(ODOM_TOPIC, bagio.ODOMETRY, camera_qos)
        tf_conn_moving = bag.add_topic(TF_TOPIC, bagio.TF_MESSAGE, bagio.TopicQos("reliable", "volatile", "keep_last", 100))
        tf = m.tf([tr for name, c in cams.items() for tr in (
            m.transform(start_ns, BASE_FRAME, topics[name]["link"], c.pose_xyz, c.pose_rpy),
            m.transform(start_ns, topics[name]["link"], topics[name]["optical"], (0.0, 0.0, 0.0), OPTICAL_RPY))])
        bag.write(tf_conn, start_ns, bagio.serialize(tf, bagio.TF_MESSAGE))
        infos = {name: camera_info_dict(c) for name, c in cams.items()}
        for i in range(frames):
            stamp = start_ns + i * period_ns
            # odometry and CameraInfo first: a player delivers them before the frame they describe
            x = cam.speed * i / cam.rate
            bag.write(odom_conn, stamp, bagio.serialize(m.odometry(stamp, x, cam.speed), bagio.ODOMETRY))
            bag.write(tf_conn_moving, stamp, bagio.serialize(
                m.tf([m.transform(stamp, ODOM_FRAME, BASE_FRAME, (x, 0.0, 0.0), (0.0, 0.0, 0.0))]), bagio.TF_MESSAGE))
            for name, c in cams.items():
                rgb = images[i] if images is not None else render_frame(i, c)[0]
                image_conn, info_conn = conns[name]
                frame = topics[name]["optical"]
                bag.write(info_conn, stamp, bagio.serialize(m.camera_info(infos[name], stamp, frame), bagio.CAMERA_INFO))
                msg = m.compressed(rgb, stamp, jpeg_quality, frame) if compressed else m.image(rgb, stamp, frame)
                bag.write(image_conn, stamp, bagio.serialize(msg, image_type))
            if progress is not None:
                progress.update(i + 1)
    first = topics[next(iter(cams))]
    return {"path": out, "storage": storage, "frames": frames, "width": width, "height": height,
            "image_topic": first["image"], "camera_info_topic": first["camera_info"], "odom_topic": ODOM_TOPIC,
            "start_ns": start_ns, "period_ns": period_ns, "camera": cam, "cameras": cams,
            "topics": topics}


def read_images(patterns) -> list:
    """RGB frames of the image files (glob patterns expanded, each in name order), brought to the
    first one's size."""
    import glob

    import cv2

    paths = []
    for p in patterns:
        paths += sorted(glob.glob(p)) if glob.has_magic(p) else [p]
    frames = []
    for path in paths:
        bgr = cv2.imread(path, cv2.IMREAD_COLOR)
        if bgr is None:
            raise ValueError(f"--images: cannot read {path}")
        if frames and bgr.shape[:2] != frames[0].shape[:2]:
            bgr = cv2.resize(bgr, frames[0].shape[1::-1], interpolation=cv2.INTER_AREA)
        frames.append(cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB))
    return frames


def run(args) -> int:
    from ..core.bagio import BagError
    from .support.common import Progress

    t0 = time.perf_counter()
    try:
        images = read_images(args.images) if args.images else None
        progress = Progress(len(images) if images is not None else args.frames, "frames", label="rendering")
        info = write_sample_bag(args.out, args.storage, args.frames, args.width, args.height,
                                args.compressed, args.jpeg_quality, int(round(args.start * 1e9)),
                                args.overwrite, progress, rig=args.rig, images=images, hfov_deg=args.hfov)
    except (BagError, ValueError, OSError) as exc:
        print(f"seg-perception sample-bag: {exc}", file=sys.stderr)
        return 2
    progress.finish()
    cam = info["camera"]
    cams = ", ".join(f"{t['image']}, {t['camera_info']}" for t in info["topics"].values())
    print(f"wrote {info['path']} ({info['storage']}): {info['frames']} frames {cam.width}x{cam.height} "
          f"at {cam.rate:g} Hz on {cams}, {ODOM_TOPIC}, {TF_TOPIC}, {TF_STATIC_TOPIC} "
          f"in {time.perf_counter() - t0:.1f} s")
    if args.rig:
        print("the node for it: --params-file config/multi_camera.yaml (the same rig), -p map.enabled:=true")
        return 0
    # floats written as floats: a ROS double-array parameter rejects "[0, 0, 1.5]"
    rpy = ",".join(repr(float(v)) for v in cam.pose_rpy)
    xyz = ",".join(repr(float(v)) for v in cam.pose_xyz)
    print("camera pose for the node's grid (as on /tf_static): "
          f"-p camera_pose.xyz:=[{xyz}] -p camera_pose.rpy:=[{rpy}]")
    return 0
