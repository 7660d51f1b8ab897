#!/usr/bin/env python3
"""The face3d node over real DDS: end-to-end latency, throughput, CPU and RSS, against the bare transport.

    python benchmarks/e2e_latency.py [--quick] [--json ros.json]      (benchmarks/speed.py --ros-only runs it too)

Three processes, like a robot: a CAMERA (this script with --role camera: publishes sensor_msgs/Image bgr8 and
CameraInfo with sensor-data QoS, best effort, stamped with the wall clock just before publishing, loading
config/fastdds_large_images.xml as a well-configured camera driver does), the NODE (`python -m
face3d_ros.ros.main`, its own process, defaults except tracking.enabled) and the RECORDER (this process: a plain
subscriber that notes the wall-clock time each message arrives). All share one ROS_DOMAIN_ID and
ROS_AUTOMATIC_DISCOVERY_RANGE=LOCALHOST.

Per image size, first the BARE TRANSPORT: camera -> recorder subscribed to the image itself (no node running):
receipt time - stamp, which includes DDS and the deserialisation into a Python message, as the node gets it.
Then per mode (tracking, detect-every-frame) one node process and, per face count, two phases:
- latency: the camera at 30 Hz; receipt time of the node's FacePoseArray - its stamp (the image's), p50/p95/p99;
  "node - transport" = node p50 - transport p50 of the same image size.
- throughput: the camera at 100 Hz (faster than the node processes): the node takes the newest image only
  (KEEP_LAST 1), so output rate = its processing rate; "drift" = latency p50 of the last third minus the first
  third of the window (growing latency would mean a queue).
Node CPU = (utime + stime from /proc/<pid>/stat) over the window / window (100 % = one core); RSS from
/proc/<pid>/status at the end of each phase (VmRSS) and its peak (VmHWM).
"""
from __future__ import annotations

import argparse
import json
import os
import random
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
PROFILE = REPO / "config" / "fastdds_large_images.xml"
SIZES = {"640x480": (640, 480), "1280x720": (1280, 720)}
LOOP_FRAMES = 30          # distinct frames per scene, played forwards then backwards (smooth motion, bounded memory)
CLK_TCK = os.sysconf("SC_CLK_TCK")


def ros_env(domain: int, log_dir: Path) -> dict:
    from face3d_ros.ros import profile_env
    return dict(os.environ, ROS_DOMAIN_ID=str(domain), ROS_AUTOMATIC_DISCOVERY_RANGE="LOCALHOST",
                ROS_LOG_DIR=str(log_dir), RCUTILS_COLORIZED_OUTPUT="0", PYTHONUNBUFFERED="1", **profile_env(PROFILE))


# ------------------------------------------------------------------------------------------------ camera role
def camera_main(args) -> int:
    import rclpy
    from rclpy.qos import qos_profile_sensor_data
    from sensor_msgs.msg import CameraInfo, Image
    from std_msgs.msg import Header

    from face3d_ros.ros.conversions import bgr_to_image_msg
    from speed import tiled_frames

    width, height = SIZES[args.size]
    frames = [img for img, _ in tiled_frames(args.faces, (width, height), LOOP_FRAMES)]
    header = Header(frame_id="bench_camera_optical_frame")
    msgs = [bgr_to_image_msg(f, header) for f in frames + frames[-2:0:-1]]
    del frames
    f = float(width)
    info = CameraInfo(header=header, width=width, height=height, distortion_model="plumb_bob",
                      k=[f, 0.0, width / 2, 0.0, f, height / 2, 0.0, 0.0, 1.0], d=[0.0] * 5,
                      p=[f, 0.0, width / 2, 0.0, 0.0, f, height / 2, 0.0, 0.0, 0.0, 1.0, 0.0])
    rclpy.init()
    node = rclpy.create_node("bench_camera")
    image_pub = node.create_publisher(Image, "image", qos_profile_sensor_data)
    info_pub = node.create_publisher(CameraInfo, "camera_info", qos_profile_sensor_data)
    deadline = time.monotonic() + 30
    while image_pub.get_subscription_count() < 1 and time.monotonic() < deadline:
        time.sleep(0.01)
    time.sleep(0.3)   # let discovery settle on the subscriber's side too
    period = 1.0 / args.rate
    n = int(round(args.seconds * args.rate))
    next_t = time.monotonic()
    for k in range(n):
        delay = next_t - time.monotonic()
        if delay > 0:
            time.sleep(delay)
        elif delay < -period:   # running behind (a busy machine): no burst to catch up
            next_t = time.monotonic()
        msg = msgs[k % len(msgs)]
        ns = time.time_ns()
        msg.header.stamp.sec, msg.header.stamp.nanosec = divmod(ns, 1_000_000_000)
        info.header.stamp = msg.header.stamp
        info_pub.publish(info)
        image_pub.publish(msg)
        next_t += period
    print(f"published {n}", flush=True)
    node.destroy_node()
    rclpy.try_shutdown()
    return 0


# ------------------------------------------------------------------------------------------------ recorder side
def proc_cpu_s(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / CLK_TCK      # utime, stime (fields 14, 15 of stat)


def proc_mem_mb(pid: int) -> tuple[float, float]:
    values = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(("VmRSS:", "VmHWM:")):
            key, kb = line.split()[:2]
            values[key] = int(kb) / 1024
    return values.get("VmRSS:", float("nan")), values.get("VmHWM:", float("nan"))


def stop(proc: subprocess.Popen) -> None:
    """End a process this benchmark started (SIGTERM: the node shuts down cleanly), SIGKILL if it hangs."""
    proc.terminate()
    try:
        proc.wait(timeout=15)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


def percentiles(values) -> dict:
    v = np.asarray(values, float)
    if v.size == 0:
        return {"p50": float("nan"), "p95": float("nan"), "p99": float("nan")}
    return {"p50": float(np.median(v)), "p95": float(np.percentile(v, 95)), "p99": float(np.percentile(v, 99))}


class Bench:
    def __init__(self, log_dir: Path, domain: int):
        self.log_dir, self.domain = log_dir, domain
        self.env = ros_env(domain, log_dir / "ros")
        from face3d_ros.ros import PROFILE_ENV_VARS
        os.environ.update({k: self.env[k] for k in ("ROS_DOMAIN_ID", "ROS_AUTOMATIC_DISCOVERY_RANGE", "ROS_LOG_DIR",
                                                    *PROFILE_ENV_VARS) if k in self.env})
        import rclpy
        from rclpy.executors import SingleThreadedExecutor
        # a context of its own on the benchmark's domain (rclpy may already be initialised in this process)
        self.context = rclpy.Context()
        rclpy.init(context=self.context, domain_id=domain)
        self.node = rclpy.create_node(f"bench_recorder_{domain}", context=self.context)
        self.executor = SingleThreadedExecutor(context=self.context)
        self.executor.add_node(self.node)

    def close(self) -> None:
        self.executor.remove_node(self.node)
        self.node.destroy_node()
        self.context.try_shutdown()

    def spin_until(self, predicate, timeout: float) -> bool:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline and not predicate():
            self.executor.spin_once(timeout_sec=0.01)
        return predicate()

    def start_camera(self, faces: int, size: str, rate: float, seconds: float) -> subprocess.Popen:
        log = (self.log_dir / f"camera_{faces}_{size}_{rate:g}.log").open("w")
        return subprocess.Popen([sys.executable, str(Path(__file__).resolve()), "--role", "camera", "--faces",
                                 str(faces), "--size", size, "--rate", str(rate), "--seconds", str(seconds)],
                                cwd=REPO, env=dict(self.env, PYTHONPATH=str(Path(__file__).parent)),
                                stdout=log, stderr=subprocess.STDOUT)

    def start_node(self, tracking: bool, threads: int) -> subprocess.Popen:
        log = (self.log_dir / f"node_{'tracking' if tracking else 'detect'}.log").open("w")
        proc = subprocess.Popen([sys.executable, "-m", "face3d_ros.ros.main", "--ros-args", "-p",
                                 f"tracking.enabled:={'true' if tracking else 'false'}", "-p",
                                 f"backend.threads:={threads}", "-p", "backend.backend:=cpu"],
                                cwd=REPO, env=self.env, stdout=log, stderr=subprocess.STDOUT)
        ready = self.spin_until(lambda: self.node.count_subscribers("image") >= 1 or proc.poll() is not None, 60)
        if proc.poll() is not None:
            raise RuntimeError(f"the node exited with {proc.returncode}; see {log.name}")
        if not ready:
            stop(proc)
            raise RuntimeError(f"the node did not subscribe to image within 60 s; see {log.name}")
        return proc

    def phase(self, msg_type, topic: str, qos, faces: int, size: str, rate: float, warmup_s: float,
              window_s: float, node_pid: int | None = None) -> dict:
        """Start a camera, record (receive ns, stamp ns) on `topic` for window_s after warmup_s of messages."""
        items: list[tuple[int, int]] = []

        def on_msg(msg):
            items.append((time.time_ns(), msg.header.stamp.sec * 1_000_000_000 + msg.header.stamp.nanosec))

        sub = self.node.create_subscription(msg_type, topic, on_msg, qos)
        camera = self.start_camera(faces, size, rate, warmup_s + window_s + 1.5)
        window: dict = {}

        def mark():   # window boundaries by stamp: warmup_s after the first message, window_s long
            if items and "start" not in window:
                window["start"] = items[0][1] + int(warmup_s * 1e9)
            if "start" in window and "cpu0" not in window and items[-1][1] >= window["start"] and node_pid:
                window["cpu0"], window["t0"] = proc_cpu_s(node_pid), time.monotonic()
            return "start" in window and items[-1][1] >= window["start"] + int(window_s * 1e9)

        ok = self.spin_until(lambda: camera.poll() is not None or mark(), warmup_s + window_s + 40)
        result: dict = {"rate_in_hz": rate}
        if node_pid and "cpu0" in window:
            elapsed = time.monotonic() - window["t0"]
            result["node_cpu_percent"] = 100 * (proc_cpu_s(node_pid) - window["cpu0"]) / max(elapsed, 1e-3)
            result["node_rss_mb"], result["node_peak_rss_mb"] = proc_mem_mb(node_pid)
        self.node.destroy_subscription(sub)
        camera.wait(timeout=60)
        if not ok or "start" not in window:
            result["error"] = f"no messages on {topic}" if not items else "window not completed"
        start = window.get("start", 0)
        inside = [(r, s) for r, s in items if start <= s < start + int(window_s * 1e9)]
        lat = [(r - s) / 1e6 for r, s in inside]
        result.update(percentiles(lat))
        result["received"] = len(inside)
        result["expected"] = int(round(window_s * rate))
        result["rate_out_hz"] = len(inside) / window_s
        third = max(1, len(lat) // 3)
        result["drift_ms"] = float(np.median(lat[-third:]) - np.median(lat[:third])) if len(lat) >= 6 else float("nan")
        return result


def run(scenes, modes, latency_s: float = 5.0, throughput_s: float = 4.0, warmup_s: float = 1.0,
        latency_hz: float = 30.0, throughput_hz: float = 100.0, threads: int = 1, verbose: bool = True) -> dict:
    """scenes: [(faces, size)], modes: [True (tracking), False]. Returns {"transport": {...}, "rows": [...]}."""
    from rclpy.qos import QoSProfile, ReliabilityPolicy, qos_profile_sensor_data
    from sensor_msgs.msg import Image

    from face3d_ros.msg import FacePoseArray

    tmp = Path(tempfile.mkdtemp(prefix="face3d-e2e-"))
    bench = Bench(tmp, random.randint(100, 200))
    out: dict = {"transport": {}, "rows": [], "logs": str(tmp)}
    try:
        for size in dict.fromkeys(s for _, s in scenes):
            t = bench.phase(Image, "image", qos_profile_sensor_data, 1, size, latency_hz, warmup_s, latency_s)
            out["transport"][size] = t
            if verbose:
                print(f"bare transport {size} bgr8 @ {latency_hz:g} Hz: p50 {t['p50']:.2f} p95 {t['p95']:.2f} "
                      f"p99 {t['p99']:.2f} ms, {t['received']}/{t['expected']} received", flush=True)
        if verbose:
            print(f"{'faces':>5} {'size':>9} {'mode':>19} | {'e2e p50':>7} {'p95':>6} {'p99':>6} {'-transp':>7} "
                  f"{'recv':>7} | {'@Hz':>4} {'out Hz':>6} {'p50':>6} {'drift':>6} | {'cpu%':>5} {'RSS MB':>6} "
                  f"{'peak':>5}")
        reliable = QoSProfile(depth=10, reliability=ReliabilityPolicy.RELIABLE)
        for tracking in modes:
            node = bench.start_node(tracking, threads)
            try:
                for faces, size in scenes:
                    lat = bench.phase(FacePoseArray, "faces", reliable, faces, size, latency_hz, warmup_s,
                                      latency_s, node.pid)
                    thr = bench.phase(FacePoseArray, "faces", reliable, faces, size, throughput_hz, warmup_s,
                                      throughput_s, node.pid)
                    row = {"faces": faces, "size": size, "mode": "tracking" if tracking else "detect-every-frame",
                           "latency": lat, "throughput": thr,
                           "minus_transport_p50_ms": lat["p50"] - out["transport"][size]["p50"]}
                    out["rows"].append(row)
                    if verbose:
                        print(f"{faces:>5} {size:>9} {row['mode']:>19} | {lat['p50']:7.2f} {lat['p95']:6.2f} "
                              f"{lat['p99']:6.2f} {row['minus_transport_p50_ms']:7.2f} "
                              f"{lat['received']:>3}/{lat['expected']:<3} | {throughput_hz:4.0f} "
                              f"{thr['rate_out_hz']:6.1f} {thr['p50']:6.2f} {thr['drift_ms']:6.2f} | "
                              f"{thr.get('node_cpu_percent', float('nan')):5.0f} {thr.get('node_rss_mb', 0):6.0f} "
                              f"{thr.get('node_peak_rss_mb', 0):5.0f}", flush=True)
            finally:
                stop(node)
    finally:
        bench.close()
    if verbose:
        print("e2e = FacePoseArray received (another process) - image stamp; -transp = e2e p50 - bare transport "
              "p50 (same size); @Hz: camera rate of the throughput phase; out Hz: FacePoseArray rate then; drift: "
              "last-third minus first-third p50 (ms); cpu%: node process, 100 = one core")
    return out


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--role", choices=("bench", "camera"), default="bench")
    parser.add_argument("--faces", type=int, help="only this many faces (default: 1, 3 and 10)")
    parser.add_argument("--size", choices=SIZES, help="only this image size (default: all)")
    parser.add_argument("--rate", type=float, default=30.0, help="camera rate of the latency phase, Hz")
    parser.add_argument("--seconds", type=float, default=5.0, help="length of the latency phase, s")
    parser.add_argument("--quick", action="store_true", help="one face at 640x480 only")
    parser.add_argument("--json", type=Path)
    args = parser.parse_args(argv)
    sys.path.insert(0, str(Path(__file__).parent))
    if args.role == "camera":
        return camera_main(args)
    from speed import json_safe
    sizes = [args.size] if args.size else (["640x480"] if args.quick else list(SIZES))
    counts = [args.faces] if args.faces else ([1] if args.quick else [1, 3, 10])
    result = run([(n, s) for s in sizes for n in counts], (True, False), latency_s=args.seconds,
                 latency_hz=args.rate)
    if args.json:   # a phase that received nothing has NaN percentiles: null in the JSON
        args.json.write_text(json.dumps(json_safe(result), indent=1, allow_nan=False))
    return 0


if __name__ == "__main__":
    sys.exit(main())
