"""rosbag2 bags (sqlite3 and MCAP) read and written with the ``rosbags`` library: no ROS install.

Messages stay CDR bytes here. Whoever needs message objects deserialises them (the offline tools
with rclpy, so a frame read from a bag is the very message the node would have received; the
sample-bag writer with rosbags' own typestore). Every failure to read a bag (missing, truncated,
corrupt, not a bag) surfaces as BagError naming the bag and its storage files.

rosbags is imported inside the functions that use it: importing this module costs nothing.
"""

from __future__ import annotations

import dataclasses
import functools
import os
import shutil
from typing import Dict, Iterable, Iterator, List, Optional, Sequence, Tuple

IMAGE = "sensor_msgs/msg/Image"
COMPRESSED_IMAGE = "sensor_msgs/msg/CompressedImage"
CAMERA_INFO = "sensor_msgs/msg/CameraInfo"
OCCUPANCY_GRID = "nav_msgs/msg/OccupancyGrid"
ODOMETRY = "nav_msgs/msg/Odometry"
TF_MESSAGE = "tf2_msgs/msg/TFMessage"
CAMERA_TYPES = (IMAGE, COMPRESSED_IMAGE)

STORAGES = ("sqlite3", "mcap")
_SUFFIX = {".db3": "sqlite3", ".mcap": "mcap"}

# Topics whose late subscribers must still get what was sent (tf2's static broadcaster
# publishes them transient-local): replayed and written with that durability whatever the bag says.
LATCHED_TOPICS = ("/tf_static",)


class BagError(RuntimeError):
    """A bag that cannot be read or written; the message names the bag and says why."""


# ----------------------------------------------------------------------------- QoS

@dataclasses.dataclass(frozen=True)
class TopicQos:
    """The QoS settings that matter for replay, independent of rosbags and rclpy."""

    reliability: str = "reliable"     # reliable | best_effort
    durability: str = "volatile"      # volatile | transient_local
    history: str = "keep_last"        # keep_last | keep_all
    depth: int = 10

    def to_rosbags(self):
        from rosbags.interfaces import (Qos, QosDurability, QosHistory, QosLiveliness,
                                        QosReliability, QosTime)

        zero = QosTime(0, 0)
        return Qos(QosHistory.KEEP_ALL if self.history == "keep_all" else QosHistory.KEEP_LAST,
                   int(self.depth),
                   QosReliability.BEST_EFFORT if self.reliability == "best_effort" else QosReliability.RELIABLE,
                   QosDurability.TRANSIENT_LOCAL if self.durability == "transient_local" else QosDurability.VOLATILE,
                   zero, zero, QosLiveliness.AUTOMATIC, zero, False)


DEFAULT_QOS = TopicQos()


def recorded_qos(profiles: Sequence[object]) -> Optional[TopicQos]:
    """One TopicQos for the offered profiles of a topic's recorded publishers (rosbags Qos
    tuples), or None when none were recorded. When publishers disagree, the result matches all
    of their subscribers: best effort if any was, volatile if any was (as ros2 bag play does)."""
    if not profiles:
        return None
    best_effort = any(getattr(p.reliability, "name", "") == "BEST_EFFORT" for p in profiles)
    all_latched = all(getattr(p.durability, "name", "") == "TRANSIENT_LOCAL" for p in profiles)
    keep_all = any(getattr(p.history, "name", "") == "KEEP_ALL" for p in profiles)
    depth = max(int(getattr(p, "depth", 0) or 0) for p in profiles)
    return TopicQos("best_effort" if best_effort else "reliable",
                    "transient_local" if all_latched else "volatile",
                    "keep_all" if keep_all else "keep_last", max(depth, 1))


def playback_qos(topic: str, recorded: Optional[TopicQos], message_count: int) -> TopicQos:
    """The QoS to republish a topic with: as recorded, with a default where nothing was
    recorded, and latched topics (/tf_static) transient-local keeping every recorded message,
    so a node that starts late still gets each static transform."""
    if topic in LATCHED_TOPICS:
        depth = max(1, message_count, recorded.depth if recorded else 1)
        return TopicQos("reliable", "transient_local", "keep_last", depth)
    qos = recorded or DEFAULT_QOS
    return dataclasses.replace(qos, depth=max(1, qos.depth))


# ----------------------------------------------------------------------------- types

@functools.lru_cache(maxsize=1)
def typestore():
    """rosbags' message definitions for the ROS 2 messages used here (same CDR in every distro
    since Humble)."""
    from rosbags.typesys import Stores, get_typestore

    return get_typestore(Stores.ROS2_JAZZY)


def serialize(msg: object, msgtype: str) -> bytes:
    """A rosbags message object -> CDR bytes, identical to what rclpy serialises."""
    return bytes(typestore().serialize_cdr(msg, msgtype))


def deserialize(raw: bytes, msgtype: str) -> object:
    return typestore().deserialize_cdr(raw, msgtype)


# ----------------------------------------------------------------------------- reading

def _storage_files(path: str) -> List[str]:
    if os.path.isdir(path):
        return sorted(f for f in os.listdir(path) if ".db3" in f or ".mcap" in f)
    return [os.path.basename(path)]


def _describe(path: str) -> str:
    files = _storage_files(path) if os.path.exists(path) else []
    return f"{path} ({', '.join(files)})" if files and os.path.isdir(path) else path


def bag_storage(path: str) -> str:
    """'sqlite3' or 'mcap' for a bag directory or a single .db3/.mcap file."""
    if os.path.isfile(path):
        storage = _SUFFIX.get(os.path.splitext(path)[1])
        if storage is None:
            raise BagError(f"{path} is not a bag: expected a bag directory, a .db3 or a .mcap file")
        return storage
    meta = os.path.join(path, "metadata.yaml")
    if os.path.isfile(meta):
        try:
            import yaml

            with open(meta, "r", encoding="utf-8") as f:
                info = (yaml.safe_load(f) or {}).get("rosbag2_bagfile_information") or {}
            storage = str(info.get("storage_identifier", ""))
            if storage in STORAGES:
                return storage
        except Exception:  # an unreadable metadata file: let the file names decide
            pass
    for name in _storage_files(path):
        for suffix, storage in _SUFFIX.items():
            if suffix in name:
                return storage
    raise BagError(f"cannot tell the storage format of {path}: no metadata.yaml, .db3 or .mcap file")


@dataclasses.dataclass(frozen=True)
class TopicInfo:
    name: str
    msgtype: str
    count: int
    connections: Tuple[object, ...]   # rosbags Connection objects

    @property
    def qos(self) -> Optional[TopicQos]:
        profiles = [q for c in self.connections for q in getattr(c.ext, "offered_qos_profiles", [])]
        return recorded_qos(profiles)


class BagReader:
    """A rosbag2 bag opened for reading. Use as a context manager."""

    def __init__(self, path: str) -> None:
        from rosbags.rosbag2 import Reader

        self.path = os.fspath(path)
        if not os.path.exists(self.path):
            raise BagError(f"bag not found: {self.path}")
        self.storage = bag_storage(self.path)
        try:
            self._reader = Reader(self.path)
            self._reader.open()
        except Exception as exc:  # ReaderError, sqlite/apsw errors, FileNotFoundError, YAML errors
            raise BagError(f"cannot read bag {_describe(self.path)}: {_reason(exc)}") from exc

    # -- information
    @property
    def connections(self) -> List[object]:
        return list(self._reader.connections)

    def topics(self) -> Dict[str, TopicInfo]:
        by_topic: Dict[str, List[object]] = {}
        for c in self._reader.connections:
            by_topic.setdefault(c.topic, []).append(c)
        out = {}
        for name, conns in by_topic.items():
            types = sorted({c.msgtype for c in conns})
            if len(types) > 1:
                raise BagError(f"bag {self.path}: topic {name} has several types {types}")
            out[name] = TopicInfo(name, types[0], sum(c.msgcount for c in conns), tuple(conns))
        return out

    @property
    def start_time(self) -> int:
        return int(self._reader.start_time)

    @property
    def end_time(self) -> int:
        return int(self._reader.end_time)

    @property
    def message_count(self) -> int:
        return int(self._reader.message_count)

    # -- messages
    def messages(self, topics: Optional[Iterable[str]] = None, start: Optional[int] = None,
                 stop: Optional[int] = None) -> Iterator[Tuple[object, int, bytes]]:
        """(rosbags Connection, receive time in ns, CDR bytes) in time order."""
        if topics is not None:
            wanted = set(topics)
            conns = [c for c in self._reader.connections if c.topic in wanted]
            if not conns:
                return
        else:
            conns = []
        try:
            for conn, t, raw in self._reader.messages(conns, start, stop):
                yield conn, int(t), raw if isinstance(raw, bytes) else bytes(raw)
        except BagError:
            raise
        except Exception as exc:  # a corrupt chunk or page found while reading
            raise BagError(f"cannot read bag {_describe(self.path)}: {_reason(exc)}") from exc

    def close(self) -> None:
        if getattr(self, "_reader", None) is not None and self._reader.is_open:
            self._reader.close()

    def __enter__(self) -> "BagReader":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def open_bag(path: str) -> BagReader:
    return BagReader(path)


def _reason(exc: BaseException) -> str:
    text = str(exc).strip() or type(exc).__name__
    return text if type(exc).__name__ in ("ReaderError", "WriterError") else f"{type(exc).__name__}: {text}"


# ----------------------------------------------------------------------------- writing

class BagWriter:
    """A new rosbag2 bag (version 9, as Jazzy writes). Use as a context manager: on an exception
    the half-written bag is removed; on success metadata.yaml is written."""

    def __init__(self, path: str, storage: str = "sqlite3", overwrite: bool = False) -> None:
        from rosbags.rosbag2 import StoragePlugin, Writer

        if storage not in STORAGES:
            raise BagError(f"unknown storage {storage!r}; choose one of {list(STORAGES)}")
        self.path = os.fspath(path)
        if os.path.exists(self.path):
            if not overwrite:
                raise BagError(f"{self.path} exists already; remove it or pass --overwrite")
            _remove_bag(self.path)
        plugin = StoragePlugin.MCAP if storage == "mcap" else StoragePlugin.SQLITE3
        self.storage = storage
        self._writer = Writer(self.path, version=9, storage_plugin=plugin)
        try:
            self._writer.open()
        except Exception as exc:
            raise BagError(f"cannot create bag {self.path}: {_reason(exc)}") from exc
        self._by_key: Dict[Tuple[str, str], object] = {}

    def add_topic(self, topic: str, msgtype: str, qos: Optional[TopicQos] = None,
                  msgdef: Optional[str] = None, digest: Optional[str] = None,
                  extra_qos: Sequence[object] = ()) -> object:
        """A connection for ``topic``; reuses the existing one for the same topic and type.
        Definitions come from ``msgdef``/``digest`` (copied from another bag) or rosbags'
        typestore (needed by MCAP, which stores the schema)."""
        key = (topic, msgtype)
        if key in self._by_key:
            return self._by_key[key]
        profiles = ([qos.to_rosbags()] if qos is not None else []) + list(extra_qos)
        kwargs = {}
        if msgdef and digest:
            kwargs.update(msgdef=msgdef, rihs01=digest)
        elif msgtype in typestore().types:
            kwargs.update(typestore=typestore())
        else:
            raise BagError(f"cannot write {topic}: no definition of {msgtype} in the source bag "
                           "and rosbags does not know the type")
        try:
            conn = self._writer.add_connection(topic, msgtype, offered_qos_profiles=profiles, **kwargs)
        except Exception as exc:
            raise BagError(f"cannot add {topic} ({msgtype}) to {self.path}: {_reason(exc)}") from exc
        self._by_key[key] = conn
        return conn

    def copy_topic(self, info: TopicInfo, topic: Optional[str] = None) -> object:
        """A connection like the source topic's (type, definition, recorded QoS profiles)."""
        src = info.connections[0]
        msgdef = getattr(src.msgdef, "data", "") or None
        digest = src.digest if isinstance(src.digest, str) and src.digest.startswith("RIHS01_") else None
        profiles = [q for c in info.connections for q in getattr(c.ext, "offered_qos_profiles", [])]
        return self.add_topic(topic or info.name, info.msgtype, msgdef=msgdef if digest else None,
                              digest=digest if msgdef else None, extra_qos=profiles)

    def write(self, connection: object, timestamp: int, data: bytes) -> None:
        self._writer.write(connection, int(timestamp), data)

    def close(self) -> None:
        if self._writer is not None:
            writer, self._writer = self._writer, None
            writer.close()

    def abort(self) -> None:
        if self._writer is not None:
            writer, self._writer = self._writer, None
            try:
                writer.abort()
            finally:
                _remove_bag(self.path)

    def __enter__(self) -> "BagWriter":
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        if exc_type is None:
            self.close()
        else:
            self.abort()


def _remove_bag(path: str) -> None:
    """Remove a bag directory (only something that looks like one: never a user's folder)."""
    if os.path.isfile(path):
        os.remove(path)
        return
    entries = os.listdir(path)
    looks_like_bag = all(e == "metadata.yaml" or os.path.splitext(e)[1] in (".db3", ".mcap", ".tmp")
                         or e.endswith((".db3-journal", ".db3-wal", ".db3-shm", ".yaml.tmp"))
                         for e in entries)
    if not looks_like_bag:
        raise BagError(f"{path} is not a bag directory (it holds {sorted(entries)[:5]}); not removing it")
    shutil.rmtree(path)


# ----------------------------------------------------------------------------- topics

def parse_remaps(items: Optional[Sequence[str]]) -> Dict[str, str]:
    """['OLD:=NEW', ...] -> {'/OLD': '/NEW'} (names made absolute, as topics in bags are)."""
    out: Dict[str, str] = {}
    for item in items or ():
        old, sep, new = item.partition(":=")
        if not sep or not old.strip() or not new.strip():
            raise ValueError(f"remap {item!r} must look like OLD:=NEW, e.g. /camera/image_raw:=/image")
        out[_absolute(old.strip())] = _absolute(new.strip())
    return out


def _absolute(topic: str) -> str:
    return topic if topic.startswith("/") else "/" + topic


def choose_camera_topics(topics: Dict[str, str], image_topic: Optional[str] = None,
                         camera_info_topic: Optional[str] = None, prefer_compressed: bool = False
                         ) -> Tuple[str, Optional[str]]:
    """(image topic, CameraInfo topic or None) from a bag's {topic: msgtype}.

    Without an explicit choice the image topic is the bag's only Image or CompressedImage topic;
    a camera recorded both raw and compressed counts once (raw wins unless ``prefer_compressed``).
    The CameraInfo topic is the camera's sibling ``camera_info``, else the bag's only one."""
    listing = ", ".join(f"{t} ({m})" for t, m in sorted(topics.items())) or "none"
    if image_topic is not None:
        image_topic = _absolute(image_topic)
        if image_topic not in topics:
            raise BagError(f"image topic {image_topic} is not in the bag; topics: {listing}")
        if topics[image_topic] not in CAMERA_TYPES:
            raise BagError(f"{image_topic} is {topics[image_topic]}, not an Image or CompressedImage")
    else:
        cams = sorted(t for t, m in topics.items() if m in CAMERA_TYPES)
        raw = [t for t in cams if topics[t] == IMAGE]
        compressed = [t for t in cams if topics[t] == COMPRESSED_IMAGE]
        # a compressed stream of a raw topic that is in the bag too is the same camera
        paired = [c for c in compressed if c.rsplit("/", 1)[0] in raw]
        if prefer_compressed:
            candidates = compressed + [r for r in raw if r + "/compressed" not in compressed]
        else:
            candidates = raw + [c for c in compressed if c not in paired]
        if not candidates:
            raise BagError(f"no sensor_msgs/Image or CompressedImage topic in the bag; topics: {listing}")
        if len(candidates) > 1:
            raise BagError(f"several camera topics {candidates}; choose one with --image-topic")
        image_topic = candidates[0]
    if camera_info_topic is not None:
        camera_info_topic = _absolute(camera_info_topic)
        if topics.get(camera_info_topic) != CAMERA_INFO:
            raise BagError(f"{camera_info_topic} is not a CameraInfo topic of the bag; topics: {listing}")
        return image_topic, camera_info_topic
    base = image_topic[:-len("/compressed")] if image_topic.endswith("/compressed") else image_topic
    sibling = base.rsplit("/", 1)[0] + "/camera_info"
    if topics.get(sibling) == CAMERA_INFO:
        return image_topic, sibling
    infos = sorted(t for t, m in topics.items() if m == CAMERA_INFO)
    return image_topic, (infos[0] if len(infos) == 1 else None)
