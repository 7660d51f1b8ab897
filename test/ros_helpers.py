"""Shared by the tests that run the node over REAL DDS (test_node.py, test_robustness.py) and by
benchmarks/robustness.py: the node in its own process, a camera that publishes like a driver, recorders, and
the catalogue of malformed inputs the robustness fuzzing sends.

Isolation: `ros_context` picks its own ROS_DOMAIN_ID and ROS_AUTOMATIC_DISCOVERY_RANGE=LOCALHOST; both sides
load config/fastdds_large_images.xml (FASTDDS_DEFAULT_PROFILES_FILE), the test's camera like the README tells
camera users, the node for its full-size debug_image.

Data: face3d_ros/data/astronaut.png (NASA, public domain); test/data/negative_*.png (scikit-image, CC0) as
face-free images.
"""
from __future__ import annotations

import os
import random
import signal
import struct
import subprocess
import sys
import time
import zlib
from contextlib import contextmanager
from pathlib import Path

import cv2
import numpy as np
import rclpy
import rclpy.duration
from rclpy.executors import SingleThreadedExecutor
from rclpy.qos import DurabilityPolicy, QoSProfile, ReliabilityPolicy, qos_profile_sensor_data
from sensor_msgs.msg import CameraInfo, CompressedImage, Image, RegionOfInterest
from std_msgs.msg import Header

from face3d_ros.ros import conversions, profile_env

REPO = Path(__file__).resolve().parents[1]
PROFILE = REPO / "config" / "fastdds_large_images.xml"
ASTRONAUT = REPO / "face3d_ros" / "data" / "astronaut.png"
COFFEE = REPO / "test" / "data" / "negative_coffee.png"   # = scikit-image coffee (CC0)
NEGATIVES = sorted((REPO / "test" / "data").glob("negative_*.png"))
FRAME_ID = "test_camera_optical_frame"
START_TIMEOUT_S = 60.0
RELIABLE = QoSProfile(depth=100, reliability=ReliabilityPolicy.RELIABLE)
LATCHED = QoSProfile(depth=1, reliability=ReliabilityPolicy.RELIABLE, durability=DurabilityPolicy.TRANSIENT_LOCAL)


# ---------------------------------------------------------------------------------------------- spinning
def spin_until(executor, predicate, timeout: float) -> bool:
    """Spin until predicate() is true or `timeout` seconds passed; returns predicate()."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        executor.spin_once(timeout_sec=0.02)
    return bool(predicate())


def spin_for(executor, seconds: float) -> None:
    spin_until(executor, lambda: False, seconds)


def stamp_ns(stamp) -> int:
    return stamp.sec * 1_000_000_000 + stamp.nanosec


def header_at(ns: int, frame_id: str = FRAME_ID) -> Header:
    header = Header(frame_id=frame_id)
    header.stamp.sec, header.stamp.nanosec = divmod(int(ns), 1_000_000_000)
    return header


def camera_info(width: int, height: int, f: float, header: Header, zero: bool = False) -> CameraInfo:
    info = CameraInfo(header=header, width=width, height=height, distortion_model="plumb_bob")
    info.k = [0.0] * 9 if zero else [f, 0.0, width / 2.0, 0.0, f, height / 2.0, 0.0, 0.0, 1.0]
    info.p = [0.0] * 12 if zero else [f, 0.0, width / 2.0, 0.0, 0.0, f, height / 2.0, 0.0, 0.0, 0.0, 1.0, 0.0]
    info.d = [0.0] * 5
    return info


# ---------------------------------------------------------------------------------------------- DDS roles
class Recorder:
    """A subscription that keeps (receive time, message) pairs; close() destroys it."""

    def __init__(self, node, msg_type, topic: str, qos):
        self.node = node
        self.items: list[tuple[float, object]] = []
        self.sub = node.create_subscription(msg_type, topic, lambda m: self.items.append((time.time(), m)), qos)

    @property
    def messages(self) -> list:
        return [m for _, m in self.items]

    def close(self) -> None:
        self.node.destroy_subscription(self.sub)


class Camera:
    """Publishes images and CameraInfo like a camera driver (sensor-data QoS unless `reliable`)."""

    def __init__(self, node, ns: str = "", compressed: bool = False, reliable: bool = False):
        self.node = node
        qos = QoSProfile(depth=5, reliability=ReliabilityPolicy.RELIABLE) if reliable else qos_profile_sensor_data
        self.compressed = compressed
        self.image_pub = (node.create_publisher(CompressedImage, f"{ns}/image/compressed", qos) if compressed
                          else node.create_publisher(Image, f"{ns}/image", qos))
        self.info_pub = node.create_publisher(CameraInfo, f"{ns}/camera_info", qos)
        self.sent: list[int] = []

    def connected(self) -> bool:
        return self.image_pub.get_subscription_count() > 0 and self.info_pub.get_subscription_count() > 0

    def header(self, age_s: float = 0.0) -> Header:
        now = self.node.get_clock().now() - rclpy.duration.Duration(seconds=age_s)
        return Header(stamp=now.to_msg(), frame_id=FRAME_ID)

    def publish(self, bgr: np.ndarray, f: float, zero_k: bool = False, with_info: bool = True,
                age_s: float = 0.0, header: Header | None = None) -> Header:
        header = header or self.header(age_s)
        h, w = bgr.shape[:2]
        if with_info:
            self.info_pub.publish(camera_info(w, h, f, header, zero_k))
        if self.compressed:
            ok, data = cv2.imencode(".jpg", bgr, [cv2.IMWRITE_JPEG_QUALITY, 90])
            assert ok
            self.image_pub.publish(CompressedImage(header=header, format="jpeg", data=data.tobytes()))
        else:
            self.image_pub.publish(conversions.bgr_to_image_msg(bgr, header))
        self.sent.append(stamp_ns(header.stamp))
        return header

    def stream(self, executor, bgr, f, frames: int, rate_hz: float, until=None, **kw) -> list[int]:
        """Publish `frames` images at `rate_hz` (spinning in between); stops early when until() is true."""
        stamps = []
        period = 1.0 / rate_hz
        next_t = time.monotonic()
        for _ in range(frames):
            stamps.append(stamp_ns(self.publish(bgr, f, **kw).stamp))
            next_t += period
            spin_until(executor, lambda: time.monotonic() >= next_t, max(0.0, next_t - time.monotonic()) + 0.05)
            if until is not None and until():
                break
        return stamps

    def destroy(self) -> None:
        for pub in (self.image_pub, self.info_pub):
            self.node.destroy_publisher(pub)


class NodeProcess:
    """The node in its own process (`python -m face3d_ros.ros.main`, what `face3d-node` and `ros2 run` run);
    stdout and stderr go to files."""

    def __init__(self, name: str, ros_args: list[str], env: dict, log_dir: Path):
        self.stdout = log_dir / f"{name}.out"
        self.stderr = log_dir / f"{name}.err"
        self.proc = subprocess.Popen([sys.executable, "-m", "face3d_ros.ros.main", "--ros-args", *ros_args],
                                     cwd=REPO, env=env, stdout=self.stdout.open("w"), stderr=self.stderr.open("w"))

    @property
    def pid(self) -> int:
        return self.proc.pid

    def log(self) -> str:
        return self.stderr.read_text() + self.stdout.read_text()

    def alive(self) -> bool:
        return self.proc.poll() is None

    def rss_kb(self) -> int:
        """Resident memory (VmRSS) of the node process, kB."""
        for line in Path(f"/proc/{self.proc.pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
        raise RuntimeError("no VmRSS")

    def wait(self, timeout: float) -> int | None:
        try:
            return self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            return None

    def stop(self, sig=signal.SIGINT, timeout: float = 20.0) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        return self.proc.returncode


def faces_for(recorder: Recorder, stamps) -> list:
    wanted = set(stamps)
    return [m for m in recorder.messages if stamp_ns(m.header.stamp) in wanted]


def diagnostics_values(recorder: Recorder, node_name: str = "face3d_node") -> dict | None:
    """The key/values of the newest DiagnosticStatus of `node_name`, or None."""
    for msg in reversed(recorder.messages):
        for status in msg.status:
            if status.name.startswith(node_name):
                return {kv.key: kv.value for kv in status.values} | {"_level": status.level,
                                                                      "_message": status.message}
    return None


class Ros:
    """rclpy in this process on a domain of its own: `node`, `executor`, `env` (for node processes),
    `log_dir`, `domain`."""


@contextmanager
def ros_context(log_dir: Path, name: str = "face3d_test_client"):
    domain = str(random.Random(os.getpid() ^ time.time_ns()).randint(100, 199))
    settings = {"ROS_DOMAIN_ID": domain, "ROS_AUTOMATIC_DISCOVERY_RANGE": "LOCALHOST", **profile_env(PROFILE)}
    saved = {k: os.environ.get(k) for k in settings}
    os.environ.update(settings)
    env = dict(os.environ, ROS_LOG_DIR=str(log_dir / "ros"), RCUTILS_COLORIZED_OUTPUT="0", PYTHONUNBUFFERED="1")
    context = rclpy.Context()
    rclpy.init(context=context)
    node = rclpy.create_node(name, context=context)
    executor = SingleThreadedExecutor(context=context)
    executor.add_node(node)
    r = Ros()
    r.node, r.executor, r.env, r.log_dir, r.domain = node, executor, env, log_dir, domain
    try:
        yield r
    finally:
        executor.shutdown()
        node.destroy_node()
        rclpy.try_shutdown(context=context)
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


def start_node(ros, name: str, ros_args: list[str], subscribed_topic: str | None) -> NodeProcess:
    """Start the node; when `subscribed_topic` is given, wait until it subscribes to it (it is active)."""
    node = NodeProcess(name, ros_args, ros.env, ros.log_dir)
    if subscribed_topic is not None:
        ok = spin_until(ros.executor, lambda: not node.alive() or ros.node.count_subscribers(subscribed_topic) > 0,
                        START_TIMEOUT_S)
        assert ok and node.alive(), f"the node did not start:\n{node.log()}"
    return node


def load_bgr(path: Path, size: int | None = None) -> np.ndarray:
    image = cv2.imread(str(path), cv2.IMREAD_COLOR)
    assert image is not None, path
    return image if size is None else cv2.resize(image, (size, size), interpolation=cv2.INTER_AREA)


# ---------------------------------------------------------------------------------------------- inputs
# What the robustness fuzzing sends. A builder takes a `Draw` (hypothesis in the tests, random.Random in the
# benchmark), the header and the current good frame (BGR), and returns the message; PROBLEM says which
# /diagnostics problem kind (`problems.<kind>`) the node must report for it, and REASON a regular expression
# the reason in its log line matches.

class Draw:
    """Parameter source for the builders: RandomDraw (benchmark) or a hypothesis-backed one (tests)."""

    def int(self, lo: int, hi: int) -> int:
        raise NotImplementedError

    def choice(self, options):
        return options[self.int(0, len(options) - 1)]

    def float(self, options) -> float:
        return float(self.choice(options))


class RandomDraw(Draw):
    def __init__(self, rnd: random.Random):
        self.rnd = rnd

    def int(self, lo: int, hi: int) -> int:
        return self.rnd.randint(lo, hi)


def _bgr8(bgr: np.ndarray, header: Header) -> Image:
    return conversions.bgr_to_image_msg(bgr, header)


def _raw(header, width, height, encoding, step, data) -> Image:
    return Image(header=header, width=width, height=height, encoding=encoding, step=step, data=bytes(data))


def bad_unknown_encoding(d: Draw, header, bgr):
    h, w = bgr.shape[:2]
    encoding = d.choice(["weird16", "32FC1", "yuv422", "bayer_rggb8", "", "8UC3", "BGR8", "rgb16", "nv21", "jpeg"])
    return _raw(header, w, h, encoding, w * 3, bgr.tobytes())


def bad_step_too_small(d: Draw, header, bgr):
    h, w = bgr.shape[:2]
    step = d.int(0, w * 3 - 1)
    return _raw(header, w, h, "bgr8", step, bytes(step * h))


def bad_data_length(d: Draw, header, bgr):
    h, w = bgr.shape[:2]
    encoding, bpp = d.choice([("bgr8", 3), ("mono8", 1), ("mono16", 2), ("rgba8", 4)])
    step = w * bpp + d.int(0, 7)
    n = max(0, step * h + d.choice([-1, 1, -step, step, -step * h // 2, 17, -(step * h)]))
    return _raw(header, w, h, encoding, step, bytes(min(n, 4 << 20)))


def bad_empty(d: Draw, header, bgr):
    w, h = d.choice([(0, 0), (0, 16), (16, 0)])
    return _raw(header, w, h, d.choice(["bgr8", "mono8"]), w * 3, b"")


def bad_absurd_size(d: Draw, header, bgr):
    w = d.choice([40_000, 100_000, 2**31, 2**32 - 1, 8_000])
    h = d.choice([1, 3, 40_000, 2**32 - 1, 8_000])
    step = d.choice([w * 3, 0, 2**32 - 1, 96])
    return _raw(header, w, h, "bgr8", step % 2**32, bytes(d.int(0, 4096)))


def bad_other_resolution(d: Draw, header, bgr):
    """A valid image whose size is not the CameraInfo's (or below the pipeline's 16 px minimum)."""
    side = d.choice([4, 15, 64, 200])
    return _bgr8(cv2.resize(bgr, (side, side + d.int(0, 3))), header)


def _encode(bgr, ext=".jpg") -> bytes:
    ok, data = cv2.imencode(ext, bgr)
    assert ok
    return data.tobytes()


def _compressed(header, data: bytes, fmt: str = "jpeg") -> CompressedImage:
    return CompressedImage(header=header, format=fmt, data=data)


def bad_jpeg_truncated(d: Draw, header, bgr):
    """Cut before the image data (fails) or inside it (libjpeg decodes the rest grey and warns)."""
    jpg = _encode(bgr)
    return _compressed(header, jpg[:d.int(2, len(jpg) - 3)])


def bad_jpeg_corrupted(d: Draw, header, bgr):
    jpg = bytearray(_encode(bgr))
    start = d.int(2, len(jpg) - 2)
    for i in range(start, min(len(jpg), start + d.int(1, 64))):
        jpg[i] ^= d.choice([0x55, 0xFF, 0x01])
    return _compressed(header, bytes(jpg))


def bad_garbage(d: Draw, header, bgr):
    rnd = random.Random(d.int(0, 2**31))
    fmt = d.choice(["jpeg", "png", "rgb8; jpeg compressed bgr8", ""])
    return _compressed(header, bytes(rnd.getrandbits(8) for _ in range(d.int(1, 2000))), fmt)


def bad_no_data(d: Draw, header, bgr):
    return _compressed(header, b"", d.choice(["jpeg", "png"]))


def bad_depth_format(d: Draw, header, bgr):
    return _compressed(header, _encode(bgr, ".png"), "16UC1; compressedDepth png")


def png_declaring(width: int, height: int) -> bytes:
    """A small PNG whose header declares width x height (its data is far too short for that)."""
    def chunk(kind, data):
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"\x00" * 1000))
            + chunk(b"IEND", b""))


def bad_declared_size(d: Draw, header, bgr):
    w, h = d.choice([(100_000, 10), (30_000, 30_000), (8_000, 8_000), (65_535, 65_535)])
    if d.int(0, 1):
        return _compressed(header, png_declaring(w, h), "png")
    jpg = bytearray(_encode(bgr))
    sof = jpg.find(b"\xff\xc0")
    jpg[sof + 5:sof + 9] = struct.pack(">HH", min(h, 65_535), min(w, 65_535))
    return _compressed(header, bytes(jpg))


def _info(header, width, height, k=None, d=None, model="plumb_bob", **fields) -> CameraInfo:
    f = float(width)
    info = CameraInfo(header=header, width=width, height=height, distortion_model=model)
    info.k = k if k is not None else [f, 0.0, width / 2, 0.0, f, height / 2, 0.0, 0.0, 1.0]
    info.d = d if d is not None else [0.0] * 5
    for name, value in fields.items():
        setattr(info, name, value)
    return info


NAN, INF = float("nan"), float("inf")


def bad_info_zero_k(d: Draw, header, bgr):
    h, w = bgr.shape[:2]
    return _info(header, w, h, k=[0.0] * 9)


def bad_info_non_finite(d: Draw, header, bgr):
    h, w = bgr.shape[:2]
    k = [float(w), 0.0, w / 2, 0.0, float(w), h / 2, 0.0, 0.0, 1.0]
    values = [NAN, INF, -INF]
    if d.int(0, 1):
        k[d.choice([0, 2, 4, 5])] = d.float(values)
        return _info(header, w, h, k=k)
    return _info(header, w, h, d=[0.0, d.float(values), 0.0, 0.0, 0.0])


def bad_info_focal(d: Draw, header, bgr):
    h, w = bgr.shape[:2]
    f = d.float([0.0, -float(w), 1e-300, 1e-3, 1e300, 1e9])
    return _info(header, w, h, k=[f, 0.0, w / 2, 0.0, d.float([f, float(w)]), h / 2, 0.0, 0.0, 1.0])


def bad_info_not_a_camera_matrix(d: Draw, header, bgr):
    h, w = bgr.shape[:2]
    k = [float(w), 0.0, w / 2, 0.0, float(w), h / 2, 0.0, 0.0, 1.0]
    index, value = d.choice([(8, 0.0), (8, 2.0), (6, 0.5), (7, 1.0), (3, 0.3)])
    k[index] = value
    return _info(header, w, h, k=k)


def bad_info_distortion(d: Draw, header, bgr):
    h, w = bgr.shape[:2]
    case = d.int(0, 2)
    if case == 0:   # a length no model has
        return _info(header, w, h, d=[0.01] * d.choice([1, 2, 3, 6, 7, 9, 20]))
    if case == 1:
        return _info(header, w, h, model=d.choice(["fisheye_unknown", "PLUMB_BOB", "kannala"]))
    return _info(header, w, h, model="", d=[0.1, 0.01, 0.0, 0.0, 0.0])


def bad_info_size(d: Draw, header, bgr):
    h, w = bgr.shape[:2]
    case = d.int(0, 2)
    if case == 0:
        return _info(header, d.choice([40_000, 2**32 - 1]), d.choice([h, 2**32 - 1]))
    if case == 1:
        return _info(header, w, h, binning_x=d.choice([w + 1, 2**31]), binning_y=d.choice([1, h + 1]))
    return _info(header, w, h, roi=RegionOfInterest(x_offset=d.int(w // 2, w), y_offset=0, width=w, height=h))


# kind -> (builder, topic: "image" | "compressed" | "camera_info", problem kind(s) on /diagnostics, regular
# expression the reason in the log line matches)
BAD_INPUTS = {
    "image/unknown encoding": (bad_unknown_encoding, "image", ("image:encoding",), "unsupported"),
    "image/step too small": (bad_step_too_small, "image", ("image:step",), "less than one row"),
    "image/data length": (bad_data_length, "image", ("image:data_length",), "data holds"),
    "image/0x0": (bad_empty, "image", ("image:empty",), "is empty"),
    "image/absurd size": (bad_absurd_size, "image", ("image:too_large",), "a corrupt header"),
    "image/other resolution": (bad_other_resolution, "image", ("camera_info:size_mismatch",),
                               "CameraInfo is for"),
    "compressed/truncated jpeg": (bad_jpeg_truncated, "compressed", ("image:decode", "image:corrupt"),
                                  "could not be decoded|is corrupt"),
    "compressed/corrupted jpeg": (bad_jpeg_corrupted, "compressed",
                                  ("image:decode", "image:corrupt", "image:decode_warning"),
                                  "could not be decoded|is corrupt|decoded with warnings"),
    "compressed/garbage": (bad_garbage, "compressed", ("image:decode",), "could not be decoded"),
    "compressed/no data": (bad_no_data, "compressed", ("image:no_data",), "has no data"),
    "compressed/depth format": (bad_depth_format, "compressed", ("image:compressed_depth",),
                                "compressed depth"),
    "compressed/absurd declared size": (bad_declared_size, "compressed", ("image:too_large",), "a corrupt header"),
    "camera_info/zero K": (bad_info_zero_k, "camera_info", ("camera_info:uncalibrated",), "not calibrated"),
    "camera_info/NaN or inf": (bad_info_non_finite, "camera_info", ("camera_info:non_finite",), "NaN or inf"),
    "camera_info/bad focal length": (bad_info_focal, "camera_info", ("camera_info:focal_length",), "focal length"),
    "camera_info/not a camera matrix": (bad_info_not_a_camera_matrix, "camera_info",
                                        ("camera_info:camera_matrix",), "not a camera matrix"),
    "camera_info/wrong D or model": (bad_info_distortion, "camera_info", ("camera_info:distortion",),
                                     "distortion|coefficients"),
    "camera_info/absurd size, binning or ROI": (bad_info_size, "camera_info", ("camera_info:size",),
                                                "more than 32768|leaves no pixel|outside the"),
}


def good_variant(d: Draw, header, bgr):
    """A GOOD image in any supported encoding and layout: must give a result with the face."""
    h, w = bgr.shape[:2]
    kind = d.choice(["bgr8", "rgb8", "bgra8", "rgba8", "mono8", "mono16", "16UC1", "bgr8 padded", "mono16 be"])
    if kind == "bgr8":
        return kind, _bgr8(bgr, header)
    if kind == "bgr8 padded":
        pad = d.int(1, 64)
        rows = np.zeros((h, w * 3 + pad), np.uint8)
        rows[:, :w * 3] = bgr.reshape(h, w * 3)
        return kind, _raw(header, w, h, "bgr8", w * 3 + pad, rows.tobytes())
    if kind in ("rgb8", "bgra8", "rgba8"):
        code = {"rgb8": cv2.COLOR_BGR2RGB, "bgra8": cv2.COLOR_BGR2BGRA, "rgba8": cv2.COLOR_BGR2RGBA}[kind]
        px = cv2.cvtColor(bgr, code)
        return kind, _raw(header, w, h, kind, w * px.shape[2], px.tobytes())
    gray = cv2.cvtColor(bgr, cv2.COLOR_BGR2GRAY)
    if kind == "mono8":
        return kind, _raw(header, w, h, "mono8", w, gray.tobytes())
    shift = d.choice([4, 6, 8])   # 12-, 14- or 16-bit data
    wide = gray.astype(np.uint16) << shift
    big = kind.endswith(" be")
    msg = _raw(header, w, h, kind.split()[0], w * 2, wide.astype(">u2" if big else "<u2").tobytes())
    msg.is_bigendian = big
    return kind, msg


def good_compressed(d: Draw, header, bgr):
    kind = d.choice(["jpeg", "png"])
    return kind, _compressed(header, _encode(bgr, ".jpg" if kind == "jpeg" else ".png"), kind)


def good_info(header, bgr, f: float | None = None) -> CameraInfo:
    h, w = bgr.shape[:2]
    return camera_info(w, h, f or float(w), header)


class Stream:
    """Drives one node with identifiable frames: a synthetic clock (stamps strictly increasing, 33 ms per good
    frame, 1 ms per bad input, so that tracking sees a steady stream), a best-effort camera like a driver's,
    and a recorder of the node's FacePoseArrays. Every good frame is sent as its CameraInfo + image and waited
    for (the node subscribes with KEEP_LAST 1: a frame sent before the previous one was taken could replace
    it); bad inputs are given `settle_s` for the node to take them."""

    def __init__(self, ros, ns: str, compressed: bool, good_bgr: np.ndarray, settle_s: float = 0.02):
        from face3d_ros.msg import FacePoseArray
        self.ros, self.ns, self.compressed, self.good = ros, ns, compressed, good_bgr
        self.camera = Camera(ros.node, ns=ns, compressed=compressed)
        self.raw_pub = (ros.node.create_publisher(Image, f"{ns}/image", qos_profile_sensor_data) if compressed
                        else self.camera.image_pub)
        self.results: dict[int, list] = {}   # stamp -> the node's FacePoseArrays with it, not yet consumed
        self.faces_sub = ros.node.create_subscription(FacePoseArray, f"{ns}/faces", self._on_faces, RELIABLE)
        self.clock_ns = time.time_ns()
        self.settle_s = settle_s
        self.tried: dict[str, int] = {}
        self.good_sent: dict[str, int] = {}
        self.good_lost: list[str] = []
        assert spin_until(ros.executor, self.camera.connected, 10.0), "the node's subscriptions were not discovered"
        spin_for(ros.executor, 0.3)   # let the node discover the recorder

    def next_header(self, step_ns: int) -> Header:
        self.clock_ns += step_ns
        return header_at(self.clock_ns)

    def publisher_for(self, topic: str):
        return {"image": self.raw_pub, "compressed": self.camera.image_pub,
                "camera_info": self.camera.info_pub}[topic]

    def send_bad(self, kind: str, draw: Draw) -> None:
        builder, topic, _, _ = BAD_INPUTS[kind]
        msg = builder(draw, self.next_header(1_000_000), self.good)
        self.publisher_for(topic).publish(msg)
        self.tried[kind] = self.tried.get(kind, 0) + 1
        spin_for(self.ros.executor, self.settle_s)

    def send_frame(self, draw: Draw | None = None, bgr: np.ndarray | None = None, f: float | None = None,
                   header: Header | None = None, timeout: float = 5.0):
        """Send one frame (its CameraInfo, then the image: a random supported encoding when `draw` is given,
        else bgr8 or jpeg of `bgr`, default the good frame), wait for the node's FacePoseArray with its stamp;
        returns (variant, that message or None)."""
        bgr = self.good if bgr is None else bgr
        header = header or self.next_header(33_000_000)
        if draw is None:
            variant = "jpeg" if self.compressed else "bgr8"
            msg = (_compressed(header, _encode(bgr)) if self.compressed else _bgr8(bgr, header))
        else:
            variant, msg = (good_compressed if self.compressed else good_variant)(draw, header, bgr)
        self.camera.info_pub.publish(good_info(header, bgr, f))
        self.camera.image_pub.publish(msg)
        stamp = stamp_ns(header.stamp)
        spin_until(self.ros.executor, lambda: stamp in self.results, timeout)
        found = self.results.pop(stamp, [])
        return variant, (found[0] if found else None)

    def send_good(self, draw: Draw | None = None, bgr: np.ndarray | None = None, f: float | None = None,
                  header: Header | None = None, timeout: float = 5.0):
        """send_frame() for a frame showing ONE face: counted, and recorded in good_lost unless its result
        holds exactly one face."""
        variant, result = self.send_frame(draw, bgr, f, header, timeout)
        self.good_sent[variant] = self.good_sent.get(variant, 0) + 1
        if result is None or len(result.faces) != 1:
            self.good_lost.append(f"{variant} stamp {stamp_ns(result.header.stamp) if result else self.clock_ns}: "
                                  + ("no result" if result is None else f"{len(result.faces)} faces"))
        return variant, result

    def _on_faces(self, msg) -> None:
        self.results.setdefault(stamp_ns(msg.header.stamp), []).append(msg)
        if len(self.results) > 1000:   # results of bad inputs the node processed all the same: bounded
            for stamp in sorted(self.results)[:500]:
                del self.results[stamp]

    def close(self) -> None:
        self.ros.node.destroy_subscription(self.faces_sub)
        self.camera.destroy()
        if self.compressed:
            self.ros.node.destroy_publisher(self.raw_pub)
