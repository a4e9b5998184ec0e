"""`seg-perception replay BAG`: publish a bag's topics over ROS 2 with their recorded timing.

For machines without ``ros2 bag play``: reads the bag with rosbags (sqlite3 or MCAP) and
publishes the recorded CDR bytes unchanged with rclpy (no deserialisation), each topic with the
QoS it was recorded with (/tf_static transient-local, keeping every recorded message), at the
recorded receive times scaled by --rate. /clock carries the recorded time, so a node started with
``use_sim_time:=true`` lives in the bag's time; the camera_seg node stamps its outputs with the
frames' recorded header stamps either way.

A topic whose message type is not installed (its Python package, e.g. tf2_msgs) cannot be
published by rclpy: it is skipped with a warning naming the package to install.

--dds-profile gives the player the node's shipped Fast DDS profile (64 MB shared memory): a bag of
1080p frames, or of several cameras whose frames come in bursts, overflows Fast DDS's default
512 KB segment on the sending side and loses frames, as a camera driver on its defaults would.
"""

from __future__ import annotations

import importlib
import sys
import time
from typing import Callable, Dict, List, Optional, Sequence

CLOCK_TOPIC = "/clock"


def add_arguments(p) -> None:
    p.add_argument("bag", help="rosbag2 directory (sqlite3 or MCAP) or a .db3/.mcap file")
    p.add_argument("--rate", type=float, default=1.0,
                   help="playback speed factor (default 1.0; 2 = twice as fast as recorded)")
    p.add_argument("--loop", action="store_true", help="play again and again until Ctrl-C")
    p.add_argument("--repeat", type=int, default=1, metavar="N", help="play N times (default 1)")
    p.add_argument("--remap", action="append", default=[], metavar="OLD:=NEW",
                   help="publish topic OLD as NEW, e.g. /camera/image_raw:=/image (repeatable)")
    p.add_argument("--topics", nargs="+", metavar="TOPIC", help="play only these topics (bag names)")
    p.add_argument("--clock-hz", type=float, default=40.0,
                   help="/clock publishing rate between messages (default 40; 0: no /clock)")
    p.add_argument("--delay", type=float, default=0.0, help="seconds to wait after creating publishers")
    p.add_argument("--wait-for", action="append", default=[], metavar="TOPIC",
                   help="before playing, wait until TOPIC (as published) has a subscriber matched to "
                        "its publisher, so the first messages are not sent before discovery (repeatable)")
    p.add_argument("--wait-timeout", type=float, default=30.0, help="seconds --wait-for waits (default 30)")
    p.add_argument("--dds-profile", action="store_true",
                   help="publish with the shipped Fast DDS profile (64 MB shared memory, as the node "
                        "uses): for 1080p frames or several cameras, which Fast DDS's default 512 KB "
                        "segment drops on the sending side (unless FASTRTPS_DEFAULT_PROFILES_FILE is set)")
    p.add_argument("--quiet", action="store_true", help="no per-topic listing")


# ----------------------------------------------------------------------------- helpers

def message_class(msgtype: str):
    """'sensor_msgs/msg/Image' -> the installed rclpy message class. Raises ImportError naming
    the missing package."""
    parts = msgtype.split("/")
    if len(parts) == 2:
        parts = [parts[0], "msg", parts[1]]
    if len(parts) != 3 or not all(parts):
        raise ImportError(f"cannot read message type {msgtype!r}")
    pkg, kind, name = parts
    try:
        module = importlib.import_module(f"{pkg}.{kind}")
        return getattr(module, name)
    except (ImportError, AttributeError) as exc:
        raise ImportError(f"{msgtype} is not installed (ROS package {pkg}, e.g. "
                          f"ros-<distro>-{pkg.replace('_', '-')})") from exc


def rclpy_qos(qos):
    """core.bagio.TopicQos -> rclpy QoSProfile."""
    from rclpy.qos import DurabilityPolicy, HistoryPolicy, QoSProfile, ReliabilityPolicy

    return QoSProfile(
        history=HistoryPolicy.KEEP_ALL if qos.history == "keep_all" else HistoryPolicy.KEEP_LAST,
        depth=max(1, int(qos.depth)),
        reliability=(ReliabilityPolicy.BEST_EFFORT if qos.reliability == "best_effort"
                     else ReliabilityPolicy.RELIABLE),
        durability=(DurabilityPolicy.TRANSIENT_LOCAL if qos.durability == "transient_local"
                    else DurabilityPolicy.VOLATILE))


class Player:
    """Publishes a bag on its own rclpy node. ``context``: an initialised rclpy Context (None:
    the default one, which must be initialised)."""

    def __init__(self, bag_path: str, rate: float = 1.0, remaps: Optional[Dict[str, str]] = None,
                 topics: Optional[Sequence[str]] = None, clock_hz: float = 40.0, context=None,
                 log: Callable[[str], None] = print) -> None:
        import rclpy

        from ..core import bagio

        if not rate > 0:
            raise ValueError(f"--rate must be > 0, got {rate}")
        self.rate = float(rate)
        self.clock_hz = float(clock_hz)
        self.log = log
        self.reader = bagio.open_bag(bag_path)
        try:
            all_topics = self.reader.topics()
            if topics:
                missing = sorted(set(topics) - set(all_topics))
                if missing:
                    raise bagio.BagError(f"topic(s) {missing} not in {bag_path}; it has {sorted(all_topics)}")
                all_topics = {t: all_topics[t] for t in topics}
            self.node = rclpy.create_node("seg_perception_replay", context=context,
                                          start_parameter_services=False)
        except BaseException:
            self.reader.close()
            raise
        remaps = remaps or {}
        self.publishers: Dict[str, object] = {}   # bag topic -> publisher
        self.published_as: Dict[str, str] = {}
        self.skipped: Dict[str, str] = {}
        self.qos: Dict[str, object] = {}
        for name, info in sorted(all_topics.items()):
            if name == CLOCK_TOPIC and self.clock_hz > 0:
                self.skipped[name] = "the player publishes /clock itself"
                continue
            try:
                cls = message_class(info.msgtype)
            except ImportError as exc:
                self.skipped[name] = str(exc)
                continue
            qos = bagio.playback_qos(name, info.qos, info.count)
            out = remaps.get(name, name)
            self.publishers[name] = self.node.create_publisher(cls, out, rclpy_qos(qos))
            self.published_as[name] = out
            self.qos[name] = qos
        self.clock_pub = None
        if self.clock_hz > 0:
            from rclpy.qos import QoSProfile
            from rosgraph_msgs.msg import Clock

            self._clock_cls = Clock
            self.clock_pub = self.node.create_publisher(Clock, CLOCK_TOPIC, QoSProfile(depth=1))
        self.start_time = self.reader.start_time
        self.end_time = self.reader.end_time
        self.published = {name: 0 for name in self.publishers}
        self.max_lateness = 0.0
        self._last_clock_ns: Optional[int] = None

    # -- information
    def describe(self) -> List[str]:
        lines = []
        for name, pub in self.publishers.items():
            q = self.qos[name]
            arrow = f" -> {self.published_as[name]}" if self.published_as[name] != name else ""
            lines.append(f"  {name}{arrow}: {q.reliability}, {q.durability}, {q.history} {q.depth}")
        for name, why in self.skipped.items():
            lines.append(f"  {name}: NOT REPLAYED: {why}")
        return lines

    def wait_for_subscribers(self, topics: Sequence[str], timeout: float) -> List[str]:
        """Wait until each topic (as published) has a subscriber matched to this player's
        publisher; returns those still without one. Matched, not only seen in the graph: between
        processes on a busy host the two can be seconds apart, and a volatile topic's messages
        sent before the match are lost (a short drive's CameraInfo, all of it)."""
        pubs = {out: self.publishers[name] for name, out in self.published_as.items()}
        if self.clock_pub is not None:
            pubs[CLOCK_TOPIC] = self.clock_pub

        def matched(topic: str) -> bool:
            pub = pubs.get(topic)
            return (pub.get_subscription_count() if pub is not None else self.node.count_subscribers(topic)) >= 1

        end = time.monotonic() + timeout
        pending = list(topics)
        while pending and time.monotonic() < end:
            pending = [t for t in pending if not matched(t)]
            if pending:
                time.sleep(0.05)
        return pending

    def prime(self, ready: Callable[[], bool], timeout: float, period: float = 0.25) -> bool:
        """Publish the first recorded message of every topic (in recorded order) every
        ``period`` s until ``ready()`` (e.g. the subscriber's answer to them has come back) or
        ``timeout``; returns ready(). A matched subscription is no proof that data flows: the
        subscriber's side can match the publisher seconds after the publisher matched it, and
        it drops what came before (here the whole CameraInfo of a short drive, now and then).
        These messages are not counted in ``published``."""
        first: Dict[str, bytes] = {}
        for conn, _, raw in self.reader.messages(list(self.publishers)):
            first.setdefault(conn.topic, raw)
            if len(first) == len(self.publishers):
                break
        end = time.monotonic() + timeout
        while not ready() and time.monotonic() < end:
            for topic, raw in first.items():
                self.publishers[topic].publish(raw)
            stop = min(end, time.monotonic() + period)
            while not ready() and time.monotonic() < stop:
                time.sleep(0.02)
        return ready()

    # -- playing
    def _publish_clock(self, t_ns: int) -> None:
        if self.clock_pub is None or (self._last_clock_ns is not None and t_ns <= self._last_clock_ns):
            return
        from builtin_interfaces.msg import Time

        sec, nsec = divmod(int(t_ns), 10 ** 9)
        self.clock_pub.publish(self._clock_cls(clock=Time(sec=sec, nanosec=nsec)))
        self._last_clock_ns = t_ns

    def _wait_until(self, due: float, wall0: float, t_msg: int) -> None:
        """Sleep until ``due`` (monotonic s), publishing /clock at clock_hz meanwhile."""
        period = 1.0 / self.clock_hz if self.clock_hz > 0 else None
        while True:
            now = time.monotonic()
            if now >= due:
                return
            if period is None:
                time.sleep(due - now)
                return
            sim = self.start_time + int((now - wall0) * self.rate * 1e9)
            self._publish_clock(min(sim, t_msg))
            time.sleep(min(period, due - now))

    def play_once(self) -> None:
        self._last_clock_ns = None  # a new loop starts the recorded time again
        wall0 = time.monotonic()
        for conn, t, raw in self.reader.messages(list(self.publishers)):
            due = wall0 + (t - self.start_time) / 1e9 / self.rate
            self._wait_until(due, wall0, t)
            self.max_lateness = max(self.max_lateness, time.monotonic() - due)
            self._publish_clock(t)
            self.publishers[conn.topic].publish(raw)
            self.published[conn.topic] += 1

    def play(self, loops: int = 1) -> int:
        """Play ``loops`` times (0: forever); returns the number of loops played."""
        played = 0
        while loops == 0 or played < loops:
            self.play_once()
            played += 1
        return played

    def flush(self, timeout: float = 2.0) -> None:
        """Give reliable subscribers the chance to receive the last messages before closing."""
        from rclpy.duration import Duration

        end = time.monotonic() + timeout
        for pub in self.publishers.values():
            left = end - time.monotonic()
            if left <= 0:
                break
            waiter = getattr(pub, "wait_for_all_acked", None)
            if waiter is not None:
                waiter(Duration(nanoseconds=int(left * 1e9)))

    def close(self) -> None:
        try:
            self.node.destroy_node()
        finally:
            self.reader.close()


# ----------------------------------------------------------------------------- command

def run(args) -> int:
    from ..core.bagio import BagError, open_bag, parse_remaps

    def fail(text: str, code: int = 2) -> int:
        print(f"seg-perception replay: {text}", file=sys.stderr)
        return code

    if not args.rate > 0:
        return fail(f"--rate must be > 0, got {args.rate}")
    if args.repeat < 1:
        return fail(f"--repeat must be >= 1, got {args.repeat}")
    loops = 0 if args.loop else args.repeat
    try:
        remaps = parse_remaps(args.remap)
        open_bag(args.bag).close()  # a bad bag is reported before ROS starts
    except (ValueError, BagError) as exc:
        return fail(str(exc))

    if args.dds_profile:  # before rclpy.init(): Fast DDS reads it when the participant is made
        from ..ros.dds_profile import apply_default_profile

        applied = apply_default_profile()
        if not args.quiet:
            print(f"Fast DDS profile: {applied}" if applied else
                  "--dds-profile: not applied (FASTRTPS_DEFAULT_PROFILES_FILE is set, or another middleware)")

    import rclpy

    rclpy.init(args=["seg-perception-replay"])  # not sys.argv: rcl would read our --remap as its own
    player = None
    code = 0
    try:
        player = Player(args.bag, args.rate, remaps, args.topics, args.clock_hz)
        duration = (player.end_time - player.start_time) / 1e9
        if not args.quiet:
            print(f"replaying {args.bag}: {duration:.1f} s recorded at rate {args.rate:g}"
                  f"{' with /clock' if player.clock_pub else ''}"
                  f"{', looping' if loops == 0 else (f', {loops} times' if loops > 1 else '')}")
            print("\n".join(player.describe()))
        for name, why in player.skipped.items():
            if name != CLOCK_TOPIC:
                print(f"warning: {name} is not replayed: {why}", file=sys.stderr)
        if args.wait_for:
            pending = player.wait_for_subscribers(args.wait_for, args.wait_timeout)
            if pending:
                return fail(f"no subscriber on {pending} after {args.wait_timeout:g} s", 3)
        if args.delay > 0:
            time.sleep(args.delay)
        t0 = time.monotonic()
        played = player.play(loops)
        wall = time.monotonic() - t0
        player.flush()
        total = sum(player.published.values())
        print(f"published {total} messages on {len(player.publishers)} topics in {wall:.2f} s "
              f"({played} loop{'s' if played != 1 else ''}; {duration * played / wall if wall > 0 else 0:.2f}x "
              f"recorded speed; at most {1e3 * player.max_lateness:.0f} ms behind schedule)")
    except KeyboardInterrupt:
        print("stopped", file=sys.stderr)
    except BagError as exc:
        code = fail(str(exc))
    except ValueError as exc:
        code = fail(str(exc))
    finally:
        if player is not None:
            player.close()
        rclpy.try_shutdown()
    return code
