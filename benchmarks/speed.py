#!/usr/bin/env python3
"""Speed of the vision core: per stage, raw model inference, pipeline overhead, frames per second.

    python benchmarks/speed.py [--frames 300] [--json speed.json] [--quick] [--core-only | --ros-only]

CORE part (this process): per stage of FacePipeline.process, plus what the ROS node adds around it measured
in-process with the real message classes: "convert" = conversions.image_to_bgr of a bgr8 Image, "jpeg" =
conversions.compressed_to_bgr of a JPEG (quality 90; a sample of the frames), "msg" = messages.face_pose_array +
messages.transforms, "markers" = messages.marker_array, "publish" = publishing the FacePoseArray (mean ms per
frame). Every scene runs with 478 points (landmarks.refine_iris with iris_model=attention, the defaults: MediaPipe's
face_landmark_with_attention, the same model as MediaPipe's refine_landmarks=True) and 468 (refine_iris=False:
face_landmark, the like-for-like comparison with MediaPipe's refine_landmarks=False). The "iris" column is
the iris_landmark model's stage, 0 with the defaults; `--iris-model iris_landmark` runs the 478-point rows
with face_landmark + iris_landmark instead. "RSS over N frames": the peak RSS after each
tenth of N frames of the 1-face 640x480 tracking scene (flat = no leak).
ROS part (benchmarks/e2e_latency.py, other processes): end-to-end latency image stamp -> FacePoseArray received
by another process, against the bare DDS transport of the same image; throughput with a 100 Hz camera; node CPU
and RSS.

Scenes are real faces (the bundled public-domain astronaut) tiled 1, 3 or 10 times into 640x480 and
1280x720 frames, each face moving (in-plane turn and scale) so that ROI tracking has work to do. Modes:
`tracking` (landmarks feed the next crop; the detector runs every detect_interval frames) and
`detect-every-frame` (tracking off). "inference" is the time inside onnxruntime alone, measured in the same
run; "overhead" = (frame time - inference) / inference: everything the pipeline adds around the models.
"Own work, replayed" (--replay-rounds): the 1-face 640x480 tracking scene's frame time outside onnxruntime,
with the models run between frames against the same frames with the models' recorded outputs handed back
instead (the pipeline takes the same path), with nothing in the models' place, with the CPU idle for as long
as each model ran, or with 8 MB of memory written in its place: what running (or waiting) between frames
costs the pipeline's own code.

Reference (skip with --no-reference): MediaPipe's own Python face mesh (mediapipe 0.10.21 legacy solution, in a
venv of its own at $FACE3D_REFERENCE_VENV, default ~/.cache/face3d_ros/mediapipe-venv, made on first use; never a
dependency of the package) on the same frames, via benchmarks/mediapipe_reference.py: static_image_mode=False
against our tracking, True against detect-every-frame; 468 points and refine_landmarks=True (478). "thr x" = our
fps / its fps, "lat x" = our ms p50 / its ms p50; "found" = faces found per frame (median), ours/its.
"Paired blocks" (--blocks, --block-frames): the target comparison (1 face, 640x480, tracking) again, our
pipeline and a MediaPipe face mesh kept running in its own process taking turns on the same blocks of 50 frames
(who goes first alternates), so that each block's ratio compares two runs a fraction of a second apart: on a
shared machine whose speed drifts by 1.5x within minutes, the median of those ratios is the number to quote. "CPU time x" = our CPU ms per frame / its (all threads of each process).
"""
from __future__ import annotations

import argparse
import json
import math
import os
import platform
import resource
import subprocess
import sys
import tempfile
import time
import zipfile
from pathlib import Path

import cv2
import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from face3d_ros.core import CameraModel, FacePipeline, PipelineConfig  # noqa: E402
from face3d_ros.core.synthetic import ASTRONAUT_FACE_CENTRE, Motion, load_sample, moving_face  # noqa: E402

SIZES = {"640x480": (640, 480), "1280x720": (1280, 720)}
FACE_COUNTS = (1, 3, 10)
GRID = {1: (1, 1), 3: (3, 1), 10: (5, 2)}
STAGES = ("detect", "landmarks", "iris", "pose", "tracking")
ROS_STAGES = ("convert", "jpeg", "msg", "markers", "publish")


class RosStages:
    """Times what the node does around the pipeline, with the real message classes (None without ROS)."""

    def __init__(self):
        import rclpy
        from std_msgs.msg import Header

        from face3d_ros.core.geometry import load_canonical_face
        from face3d_ros.msg import FacePoseArray
        from face3d_ros.ros import conversions, messages
        if not rclpy.ok():
            os.environ.setdefault("ROS_AUTOMATIC_DISCOVERY_RANGE", "LOCALHOST")
            rclpy.init()
        self.conversions, self.messages = conversions, messages
        self.node = rclpy.create_node("speed_bench_stages")
        self.publisher = self.node.create_publisher(FacePoseArray, "speed_bench_faces", 10)
        self.header = Header(frame_id="bench_camera_optical_frame")
        canonical = load_canonical_face(None)
        self.triangles = {True: np.vstack([canonical.triangles, canonical.iris_triangles]), False: canonical.triangles}

    def image_msg(self, image):
        return self.conversions.bgr_to_image_msg(image, self.header)

    def jpeg_msg(self, image):
        from sensor_msgs.msg import CompressedImage
        ok, data = cv2.imencode(".jpg", image, [cv2.IMWRITE_JPEG_QUALITY, 90])
        return CompressedImage(header=self.header, format="jpeg", data=data.tobytes())

    def measure(self, image_msg, jpeg_msg, faces, camera, iris: bool) -> dict:
        out, t = {}, time.perf_counter
        start = t()
        image = self.conversions.image_to_bgr(image_msg)
        out["convert"] = (t() - start) * 1e3
        if jpeg_msg is not None:
            start = t()
            self.conversions.compressed_to_bgr(jpeg_msg)
            out["jpeg"] = (t() - start) * 1e3
        h, w = image.shape[:2]
        start = t()
        msg = self.messages.face_pose_array(self.header, faces, camera, w, h)
        self.messages.transforms(self.header, faces)
        out["msg"] = (t() - start) * 1e3
        start = t()
        self.messages.marker_array(self.header, faces, self.triangles[iris])
        out["markers"] = (t() - start) * 1e3
        start = t()
        self.publisher.publish(msg)
        out["publish"] = (t() - start) * 1e3
        return out


def ros_stages():
    try:
        return RosStages()
    except ImportError as err:   # no ROS / messages not built: the core numbers only
        print(f"ROS stages skipped: {err}")
        return None


def tiled_frames(n_faces: int, size: tuple[int, int], n_frames: int, fps: float = 30.0):
    """Frames with n_faces moving astronaut faces on a grid; yields (image, stamp_ns)."""
    cols, rows = GRID[n_faces]
    width, height = size
    cell_w, cell_h = width // cols, height // rows
    zoom = min(1.0, 1.3 * min(cell_w, cell_h) / 512)   # a face ~1/4 of the cell
    source = cv2.resize(load_sample(), None, fx=zoom, fy=zoom, interpolation=cv2.INTER_AREA)
    centre = (ASTRONAUT_FACE_CENTRE[0] * zoom, ASTRONAUT_FACE_CENTRE[1] * zoom)
    streams = [moving_face(n_frames, fps, Motion(roll_amplitude_deg=10, scale_amplitude=0.08, period_s=3 + k),
                           (cell_w, cell_h), source, centre, seed=k) for k in range(n_faces)]
    for i in range(n_frames):
        canvas = np.zeros((height, width, 3), np.uint8)
        for k, stream in enumerate(streams):
            frame = next(stream)
            r, c = divmod(k, cols)
            canvas[r * cell_h:(r + 1) * cell_h, c * cell_w:(c + 1) * cell_w] = frame.image
        yield canvas, int(i * 1e9 / fps)


def scene_config(n_faces: int, tracking: bool, threads: int, iris: bool, iris_model: str) -> PipelineConfig:
    """The pipeline configuration of a benchmark scene, on the CPU backend. Detect-every-frame: one detection and
    one landmark pass per face, like MediaPipe's static mode (the single-image accuracy extras, second_pass and
    mirror_average, would triple the landmark work)."""
    return PipelineConfig().updated({"tracking.enabled": tracking, "backend.threads": threads,
                                     "backend.backend": "cpu", "landmarks.refine_iris": iris,
                                     "landmarks.iris_model": iris_model,
                                     "landmarks.second_pass": False, "landmarks.mirror_average": False,
                                     # as the reference's max_num_faces: with that many tracked, no detector
                                     "detector.max_faces": n_faces})


def run_scene(n_faces: int, size_name: str, tracking: bool, n_frames: int, warmup: int, threads: int,
              iris: bool = True, ros: RosStages | None = None, iris_model: str = "attention") -> dict:
    pipeline = FacePipeline(scene_config(n_faces, tracking, threads, iris, iris_model))
    width, height = SIZES[size_name]
    camera = CameraModel.default_for(width, height)
    frames = list(tiled_frames(n_faces, SIZES[size_name], n_frames + warmup))
    totals, inference, cpu, found = [], [], [], []
    stages = {s: [] for s in STAGES + ROS_STAGES}
    runs_before = 0
    # every timed frame's Image message, and every tenth one's JPEG (counted from the first timed frame)
    msgs = [(ros.image_msg(img), ros.jpeg_msg(img) if i >= warmup and (i - warmup) % 10 == 0 else None)
            if ros else None for i, (img, _) in enumerate(frames)]
    for i, (image, stamp_ns) in enumerate(frames):
        if i == warmup:
            runs_before = pipeline.detector_runs
        inference_before = pipeline.inference_ms
        cpu_before = time.process_time()
        start = time.perf_counter()
        faces = pipeline.process(image, camera, stamp_ns)
        elapsed = (time.perf_counter() - start) * 1e3
        if i < warmup:
            continue
        totals.append(elapsed)
        cpu.append((time.process_time() - cpu_before) * 1e3)
        inference.append(pipeline.inference_ms - inference_before)
        found.append(len(faces))
        for stage in STAGES:
            stages[stage].append(pipeline.stage_ms.get(stage, 0.0))
        if ros:
            for stage, ms in ros.measure(*msgs[i], faces, camera, iris).items():
                stages[stage].append(ms)
    totals, inference = np.array(totals), np.array(inference)
    median = float(np.median(totals))
    return {"faces": n_faces, "size": size_name, "mode": "tracking" if tracking else "detect-every-frame",
            "points": 478 if iris else 468,
            "frames": n_frames, "median_ms": median, "p95_ms": float(np.percentile(totals, 95)),
            "fps": 1000.0 / median, "inference_ms": float(np.median(inference)),
            "overhead": float(np.median((totals - inference) / np.maximum(inference, 1e-6))),
            "cpu_ms_per_frame": float(np.median(cpu)), "faces_found_median": float(np.median(found)),
            "detector_run_fraction": (pipeline.detector_runs - runs_before) / n_frames,
            "stage_mean_ms": {s: float(np.mean(v)) if v else None for s, v in stages.items()}}


def current_rss_mb() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024   # not Linux: the peak instead


def rss_over_frames(n_frames: int, threads: int) -> dict:
    """Current RSS (MB, VmRSS) after each tenth of n_frames frames of the 1-face 640x480 tracking scene, in a
    pipeline of its own (a leak grows it; the peak of this process is set by the frame lists of other scenes)."""
    pipeline = FacePipeline(PipelineConfig().updated({"backend.threads": threads, "backend.backend": "cpu"}))
    camera = CameraModel.default_for(640, 480)
    loop = [image for image, _ in tiled_frames(1, SIZES["640x480"], 60)]
    loop += loop[-2:0:-1]
    marks, step = [], max(1, n_frames // 10)
    for i in range(n_frames):
        pipeline.process(loop[i % len(loop)], camera, int(i * 1e9 / 30))
        if (i + 1) % step == 0:
            marks.append((i + 1, current_rss_mb()))
    return {"frames": n_frames, "peak_rss_mb_after": marks, "growth_mb": marks[-1][1] - marks[0][1]}


class RecordedSession:
    """Stands in for an onnxruntime session: records what the real one returns and how long each call took
    (`replaying` False), or hands back those outputs in the same order without running the model (`replaying`
    True), after `stand_in(seconds)` when one is set: what to do in the model's place for as long as it ran."""

    def __init__(self, session):
        self.session, self.outputs, self.seconds, self.replaying = session, [], [], False
        self.stand_in = None
        self._next = iter(())

    def replay(self, outputs: list, seconds: list, stand_in=None) -> None:
        self.outputs, self.seconds, self.stand_in = outputs, seconds, stand_in
        self.replaying, self._next = True, iter(zip(outputs, seconds))

    def run(self, output_names, feeds):
        if self.replaying:
            outputs, seconds = next(self._next)
            if self.stand_in:
                self.stand_in(seconds)
            return outputs
        start = time.perf_counter()
        outputs = self.session.run(output_names, feeds)
        self.seconds.append(time.perf_counter() - start)
        self.outputs.append(outputs)
        return outputs


def idle(seconds: float) -> None:
    """The model's place left idle: the CPU waits as it would for a camera or a GPU."""
    time.sleep(seconds)


_SWEPT = np.zeros(8 << 20, np.uint8)


def sweep_memory(seconds: float) -> None:
    """The model's place taken by data traffic alone: 8 MB written (more than the attention model's ~5 MB of
    weights and activations; the L2 cache is 0.5-1 MB per core), none of the model's code run."""
    np.add(_SWEPT, 1, out=_SWEPT)


STAND_INS = {"outputs_replayed": None, "replayed_after_idle": idle, "replayed_after_memory_sweep": sweep_memory}


def own_work_ms(frames: list, iris: bool, threads: int, replay: dict | None,
                stand_in=None, iris_model: str = "attention") -> tuple[float, float, dict]:
    """(median ms per frame outside onnxruntime, median inference ms, the recording sessions) of the 1-face
    640x480 tracking scene; with `replay` (the sessions of an earlier run) the models are not run: their
    recorded outputs come back (after `stand_in(seconds the model took)`, not counted as the pipeline's work),
    so the pipeline takes the same path without the model's code and data passing through the CPU."""
    pipeline = FacePipeline(scene_config(1, True, threads, iris, iris_model))
    sessions = {}
    for model in pipeline.models:
        sessions[model.path.name] = model.session = RecordedSession(model.session)
        if replay:
            recorded = replay[model.path.name]
            model.session.replay(recorded.outputs, recorded.seconds, stand_in)
    camera = CameraModel.default_for(*SIZES["640x480"])
    own, inference = [], []
    for image, stamp_ns in frames:
        inference_before = pipeline.inference_ms
        start = time.perf_counter()
        pipeline.process(image, camera, stamp_ns)
        elapsed = (time.perf_counter() - start) * 1e3
        inference.append(pipeline.inference_ms - inference_before)
        own.append(elapsed - inference[-1])
    return float(np.median(own)), float(np.median(inference)), sessions


def overhead_replayed(n_frames: int, rounds: int, threads: int, iris_model: str = "attention",
                      rows_468: bool = True) -> dict:
    """The pipeline's own work per frame with the models run between frames, against the same work with their
    recorded outputs replayed (same frames, same path): with nothing in the models' place, with the CPU idle
    for as long as each model ran, and with 8 MB of memory written in their place (alternating rounds). What
    the first costs more than the second is what running anything else between frames costs our code; the
    last two tell idle time and data traffic apart."""
    frames = list(tiled_frames(1, SIZES["640x480"], n_frames))
    out = {}
    for iris in ((True, False) if rows_468 else (True,)):
        rows = []
        for k in range(rounds):
            run_ms, inference_ms, sessions = own_work_ms(frames, iris, threads, None, iris_model=iris_model)
            order = list(STAND_INS.items())
            replayed = {name: own_work_ms(frames, iris, threads, sessions, stand_in, iris_model)[0]
                        for name, stand_in in (order if k % 2 == 0 else order[::-1])}
            rows.append({"models_run": run_ms, **replayed, "inference": inference_ms})
        medians = {name: float(np.median([row[name] for row in rows])) for name in rows[0]}
        inference_ms = medians.pop("inference")
        out[478 if iris else 468] = {**{f"own_ms_{name}": ms for name, ms in medians.items()},
                                     "inference_ms": inference_ms,
                                     **{f"overhead_{name}": ms / inference_ms for name, ms in medians.items()},
                                     "rounds": rows}
    return out


def json_safe(value):
    """`value` with NaN and inf as null: json.dumps would write the bare NaN token, which is not JSON."""
    if isinstance(value, dict):
        return {k: json_safe(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [json_safe(v) for v in value]
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


def ms_text(ms: float | None, width: int) -> str:
    """A stage's mean ms for the table; "-" where the stage was not sampled."""
    return f"{ms:{width}.2f}" if ms is not None else "-".rjust(width)


REFERENCE_PINS = ("mediapipe==0.10.21", "numpy<2", "opencv-contrib-python<4.12")  # 0.10.21 needs numpy 1.x
REFERENCE_SCRIPT = Path(__file__).resolve().with_name("mediapipe_reference.py")


def reference_python() -> tuple[Path | None, str]:
    """(python of the reference venv, made or reused) or (None, why not). Prints one line."""
    venv = Path(os.environ.get("FACE3D_REFERENCE_VENV") or Path.home() / ".cache/face3d_ros/mediapipe-venv")
    python = venv / "bin" / "python"
    wanted = REFERENCE_PINS[0].split("==")[1]
    probe = [str(python), "-I", "-c", "import importlib.metadata as m; print(m.version('mediapipe'))"]
    if python.exists() and subprocess.run(probe, capture_output=True, text=True).stdout.strip() == wanted:
        print(f"reference: mediapipe {wanted} in {venv}")
        return python, ""
    if not (3, 9) <= sys.version_info[:2] <= (3, 12):
        return None, f"mediapipe {wanted} has wheels for CPython 3.9-3.12 only, this is {platform.python_version()}"
    print(f"reference: installing {' '.join(REFERENCE_PINS)} into {venv} ...", end=" ", flush=True)
    start = time.monotonic()
    try:
        subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True, capture_output=True, text=True)
        subprocess.run([str(python), "-m", "pip", "install", "-q", "--disable-pip-version-check", "--retries", "1",
                        "--timeout", "30", *REFERENCE_PINS], check=True, capture_output=True, text=True, timeout=1800)
    except (OSError, subprocess.SubprocessError) as exc:
        print("failed")
        lines = [ln for ln in (getattr(exc, "stderr", None) or "").splitlines() if ln.strip() and "WARNING" not in ln]
        return None, (lines[-1].strip() if lines else str(exc))
    print(f"done ({time.monotonic() - start:.0f} s)")
    return python, ""


def write_npz(path: Path, images) -> None:
    """BGR images (any iterable) as the .npz mediapipe_reference.py reads, written one at a time (as np.savez
    would store them) so that only one is in memory."""
    with zipfile.ZipFile(path, "w") as npz:
        for i, image in enumerate(images):
            with npz.open(f"frame_{i:05d}.npy", "w", force_zip64=True) as f:
                np.lib.format.write_array(f, image)


def write_frames(path: Path, n_faces: int, size_name: str, n_frames: int) -> None:
    """The frames run_scene uses, as the .npz mediapipe_reference.py reads (BGR, as our pipeline gets them)."""
    write_npz(path, (image for image, _ in tiled_frames(n_faces, SIZES[size_name], n_frames)))


def reference_env() -> dict:
    """This environment without our Python paths: the reference venv must not import this checkout."""
    return {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "PYTHONHOME")}


def reference_command(python: Path, *args) -> list[str]:
    """The command line that runs mediapipe_reference.py with `args` in the reference venv (with reference_env)."""
    return [str(python), "-I", str(REFERENCE_SCRIPT), *map(str, args)]


def last_error_line(stderr: str, status: int) -> str:
    """Why a reference run failed: the last line of its stderr, or its exit status."""
    return (stderr.strip().splitlines() or [f"exit status {status}"])[-1]


def call_reference(python: Path, *args, out: Path) -> str:
    """Runs mediapipe_reference.py with `args` in the reference venv; "" when it wrote `out`, else why not."""
    proc = subprocess.run(reference_command(python, *args), capture_output=True, text=True, env=reference_env())
    if proc.returncode or not out.exists():
        return last_error_line(proc.stderr, proc.returncode)
    return ""


def run_reference(python: Path, frames: Path, n_faces: int, warmup: int, mode: str = "both",
                  refine: str = "both") -> dict:
    """mediapipe_reference.py's report on `frames` ({"runs": [...], ...}), or {"error": why}."""
    with tempfile.TemporaryDirectory(prefix="face3d-reference-") as tmp:
        out = Path(tmp) / "reference.json"
        error = call_reference(python, frames, "--max-faces", n_faces, "--warmup", warmup, "--mode", mode,
                               "--refine", refine, "--json", out, out=out)
        return {"error": error} if error else json.loads(out.read_text())


def reference_scene(python: Path, n_faces: int, size_name: str, n_frames: int, warmup: int) -> dict:
    """MediaPipe's face mesh on the frames run_scene uses: {"tracking"|"detect-every-frame": {...}} or {"error"}."""
    with tempfile.TemporaryDirectory(prefix="face3d-frames-") as tmp:
        frames = Path(tmp) / "frames.npz"
        write_frames(frames, n_faces, size_name, n_frames + warmup)
        report = run_reference(python, frames, n_faces, warmup)
    if "error" in report:
        return report
    scene = {}
    for run in report.pop("runs"):
        mode = "tracking" if run["mode"] == "tracking" else "detect-every-frame"
        scene.setdefault(mode, {})["face_mesh_refined" if run["refine_landmarks"] else "face_mesh"] = run
    return {"mediapipe": report, **scene}


def paired_blocks(python: Path, args, blocks: int, block_frames: int) -> list[dict]:
    """The target comparison (1 face, 640x480, tracking), robust to a machine whose speed drifts within seconds:
    our pipeline and a MediaPipe face mesh kept running in its own process (mediapipe_reference.py --serve) take
    turns on the same blocks of `block_frames` frames (who goes first alternates), and each block's ratio
    compares two runs a fraction of a second apart. Both walk the frames forth and back, so the motion never
    jumps and both trackers stay on the face. Prints one line per point count."""
    out = []
    n_frames = args.frames + args.warmup
    with tempfile.TemporaryDirectory(prefix="face3d-frames-") as tmp:
        path = Path(tmp) / "frames.npz"
        frames = [image for image, _ in tiled_frames(1, SIZES["640x480"], n_frames)]
        write_npz(path, frames)
        order = list(range(n_frames)) + list(range(n_frames - 2, 0, -1))
        for iris in ((True, False) if args.rows_468 else (True,)):
            row = paired_row(python, path, frames, order, iris, args, blocks, block_frames)
            if "error" in row:
                print(f"paired blocks: reference failed: {row['error']}")
                return out
            out.append(row)
            q25, q75 = row["throughput_ratio_quartiles"]
            print(f"  {row['points']} pts vs MediaPipe {'refined' if iris else 'plain'}: throughput x median "
                  f"{row['throughput_ratio_median']:.2f} (middle half of the blocks {q25:.2f}-{q75:.2f}); ours "
                  f"{row['our_fps']:.0f} fps, MediaPipe {row['reference_fps']:.0f} fps; CPU time x "
                  f"{row['cpu_ratio_median']:.2f}" + ("" if row["same_faces"] else "; faces found differ!"), flush=True)
    return out


def paired_row(python: Path, path: Path, frames: list, order: list[int], iris: bool, args, blocks: int,
               block_frames: int) -> dict:
    """One point count of paired_blocks: {"points", "throughput_ratio_median", ...} or {"error": why}."""
    pipeline = FacePipeline(scene_config(1, True, args.threads, iris, args.iris_model))
    camera = CameraModel.default_for(640, 480)
    with tempfile.TemporaryFile("w+") as errors:
        proc = subprocess.Popen(reference_command(python, path, "--serve", "--mode", "tracking",
                                                  "--refine", "yes" if iris else "no", "--max-faces", 1),
                                stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=errors, text=True,
                                env=reference_env())
        try:
            if not proc.stdout.readline():
                errors.seek(0)
                return {"error": last_error_line(errors.read(), proc.wait())}
            stamp_ns = [0]

            def ours(indices):
                ms, faces = [], []
                cpu_start = time.process_time()
                for i in indices:
                    stamp_ns[0] += 33_333_333
                    start = time.perf_counter()
                    faces.append(len(pipeline.process(frames[i], camera, stamp_ns[0])))
                    ms.append((time.perf_counter() - start) * 1e3)
                return ms, (time.process_time() - cpu_start) * 1e3, faces

            def theirs(indices):
                proc.stdin.write(json.dumps(indices) + "\n")
                proc.stdin.flush()
                reply = json.loads(proc.stdout.readline())
                return reply["ms"], reply["cpu_ms"], reply["faces"]

            position = 0

            def take(count):
                nonlocal position
                indices = [order[(position + k) % len(order)] for k in range(count)]
                position += count
                return indices

            warmup = take(args.warmup)
            ours(warmup), theirs(warmup)
            ratios, cpu_ratios, our_ms, their_ms, same_faces = [], [], [], [], True
            for b in range(blocks):
                indices = take(block_frames)
                if b % 2:
                    (t_ms, t_cpu, t_faces), (o_ms, o_cpu, o_faces) = theirs(indices), ours(indices)
                else:
                    (o_ms, o_cpu, o_faces), (t_ms, t_cpu, t_faces) = ours(indices), theirs(indices)
                ratios.append(float(np.median(t_ms) / np.median(o_ms)))
                cpu_ratios.append(o_cpu / t_cpu)
                our_ms += o_ms
                their_ms += t_ms
                same_faces = same_faces and o_faces == t_faces
        finally:
            proc.stdin.close()
            proc.wait(timeout=30)
    return {"points": 478 if iris else 468, "blocks": blocks, "block_frames": block_frames,
            "our_fps": 1000.0 / float(np.median(our_ms)), "reference_fps": 1000.0 / float(np.median(their_ms)),
            "throughput_ratio": ratios, "throughput_ratio_median": float(np.median(ratios)),
            "throughput_ratio_quartiles": [float(q) for q in np.percentile(ratios, [25, 75])],
            "cpu_ratio": cpu_ratios, "cpu_ratio_median": float(np.median(cpu_ratios)), "same_faces": same_faces}


def compare(ours: dict, reference: dict) -> tuple[dict, str]:
    """Ratios of ours to the reference runs for our row's mode (put into the JSON) and the columns to print."""
    if "error" in reference:
        return {"error": reference["error"]}, f" | reference failed: {reference['error']}"
    runs, cols = reference.get(ours["mode"], {}), ""
    for key in (("face_mesh_refined",) if ours.get("points", 478) == 478 else ("face_mesh",)):
        run = runs.get(key)
        if run is None or "error" in run:
            cols += f" | {key}: {run['error'] if run else 'missing'}"
            continue
        run = ours.setdefault("vs_reference", {})[key] = dict(run)
        run["throughput_ratio"] = ours["fps"] / run["fps"]
        run["latency_ratio"] = ours["median_ms"] / run["median_ms"]
        run["cpu_ratio"] = ours["cpu_ms_per_frame"] / run["cpu_ms_per_frame"]   # less sensitive to a busy machine
        run["same_faces"] = run["faces_found_median"] == ours["faces_found_median"]
        found = f"{ours['faces_found_median']:g}/{run['faces_found_median']:g}" + ("" if run["same_faces"] else "!")
        cols += (f" | {key[10:] or 'plain':>7} {run['median_ms']:6.2f} {run['fps']:6.1f} {found:>6} {run['throughput_ratio']:5.2f} "
                 f"{run['latency_ratio']:5.2f}")
    return ours.get("vs_reference", {}), cols


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--frames", type=int, default=300)
    parser.add_argument("--warmup", type=int, default=20)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--quick", action="store_true", help="one face at 640x480 only (core and ROS parts)")
    parser.add_argument("--json", type=Path)
    parser.add_argument("--no-reference", dest="reference", action="store_false",
                        help="skip MediaPipe's own face mesh as a reference")
    part = parser.add_mutually_exclusive_group()
    part.add_argument("--core-only", action="store_true", help="skip the ROS part (node processes over DDS)")
    part.add_argument("--ros-only", action="store_true", help="only the ROS part")
    parser.add_argument("--iris-model", default="attention", choices=("attention", "iris_landmark"),
                        help="landmarks.iris_model of the 478-point rows (default %(default)s)")
    parser.add_argument("--no-468", dest="rows_468", action="store_false",
                        help="skip the refine_iris=False (468-point) rows")
    parser.add_argument("--blocks", type=int, default=None,
                        help="paired blocks of the target comparison, ours and MediaPipe's alternately (default 60, "
                             "20 with --quick; 0: skip)")
    parser.add_argument("--block-frames", type=int, default=50, help="frames per paired block")
    parser.add_argument("--rss-frames", type=int, default=None,
                        help="frames of the RSS check (default 10000, 2000 with --quick; 0: skip)")
    parser.add_argument("--replay-rounds", type=int, default=3,
                        help="rounds of the own-work check: the pipeline's own work with the models run against "
                             "their outputs replayed, bare, after idling and after a memory sweep (0: skip)")
    parser.add_argument("--ros-seconds", type=float, default=5.0, help="latency window per ROS row (30 Hz)")
    parser.add_argument("--throughput-hz", type=float, default=100.0, help="camera rate of the ROS throughput phase")
    args = parser.parse_args(argv)
    scenes = [(1, "640x480")] if args.quick else [(n, s) for s in SIZES for n in FACE_COUNTS]
    report: dict = {"machine": platform.platform(), "cpu": cpu_model(), "cores": os.cpu_count(),
                    "load_before": os.getloadavg()}
    if not args.ros_only:
        report.update(core_part(args, scenes))
    if not args.core_only:
        import e2e_latency
        print(f"\nROS part: node process + camera process over DDS ({e2e_latency.PROFILE.name} on all sides)")
        report["ros"] = e2e_latency.run(scenes, (True, False), latency_s=args.ros_seconds,
                                        throughput_s=max(3.0, 0.8 * args.ros_seconds),
                                        throughput_hz=args.throughput_hz, threads=args.threads)
    report["load_after"] = os.getloadavg()
    print(f"machine: {report['cpu']}, {report['cores']} cores; load average before {report['load_before'][0]:.2f}, "
          f"after {report['load_after'][0]:.2f}")
    if args.json:
        args.json.write_text(json.dumps(json_safe(report), indent=1, allow_nan=False))
    return 0


def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def core_part(args, scenes) -> dict:
    ref_python, skipped = reference_python() if args.reference else (None, "--no-reference")
    if args.reference and ref_python is None:
        print(f"reference skipped: {skipped}")
    ros = ros_stages()
    results = []
    header = (f"{'faces':>5} {'size':>9} {'mode':>19} {'pts':>3} {'ms p50':>7} {'p95':>6} {'fps':>6} {'infer':>6} "
              f"{'ovh':>5} {'cpu ms':>6} {'det%':>5} " + " ".join(f"{s:>9}" for s in STAGES)
              + ("".join(f" {s:>7}" for s in ROS_STAGES) if ros else ""))
    if ref_python:
        header += f" | {'mp':>7} {'p50':>6} {'fps':>6} {'found':>6} {'thr x':>5} {'lat x':>5}"
    print(header)
    reference_info = {}
    for n_faces, size_name in scenes:
        ref = reference_scene(ref_python, n_faces, size_name, args.frames, args.warmup) if ref_python else None
        reference_info = (ref or {}).get("mediapipe", reference_info)
        for iris in ((True, False) if args.rows_468 else (True,)):
            for tracking in (True, False):
                r = run_scene(n_faces, size_name, tracking, args.frames, args.warmup, args.threads, iris, ros,
                              args.iris_model)
                results.append(r)
                r["reference"], ref_cols = compare(r, ref) if ref else ({"skipped": skipped}, "")
                print(f"{r['faces']:>5} {r['size']:>9} {r['mode']:>19} {r['points']:>3} {r['median_ms']:7.2f} "
                      f"{r['p95_ms']:6.2f} {r['fps']:6.1f} {r['inference_ms']:6.2f} {100 * r['overhead']:4.0f}% "
                      f"{r['cpu_ms_per_frame']:6.2f} {100 * r['detector_run_fraction']:4.0f}% "
                      + " ".join(ms_text(r['stage_mean_ms'][s], 9) for s in STAGES)
                      + ("".join(" " + ms_text(r['stage_mean_ms'][s], 7) for s in ROS_STAGES) if ros else "")
                      + ref_cols, flush=True)
    peak_rss_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(f"peak RSS {peak_rss_mb:.0f} MB; stage columns are mean ms per frame (jpeg: of the frames sampled)")
    if ref_python:
        print("mp: MediaPipe's own face mesh (short-range detector, TFLite + XNNPACK) on the same frames, 'refined' "
              "(478) against our 478-point rows, 'plain' (468) against our 468-point rows; thr x = our fps / its fps, "
              "lat x = our p50 / its p50; '!': it found a different number of faces")
    out = {"results": results, "peak_rss_mb": peak_rss_mb, "reference": reference_info}
    blocks = args.blocks if args.blocks is not None else (20 if args.quick else 60)
    if ref_python and blocks > 0:
        print(f"paired blocks (1 face 640x480 tracking; ours and a running MediaPipe face mesh take turns, "
              f"{blocks} blocks of the same {args.block_frames} frames each; ratios per block):")
        out["paired"] = paired_blocks(ref_python, args, blocks, args.block_frames)
    if args.replay_rounds:
        out["overhead_replayed"] = replayed = overhead_replayed(args.frames, args.replay_rounds, args.threads,
                                                                       args.iris_model, args.rows_468)
        print(f"the pipeline's own work per frame (1 face 640x480 tracking, median of {args.replay_rounds} "
              "alternating rounds): with the models run / with their recorded outputs replayed: nothing in their "
              "place, the CPU idle as long as they ran, 8 MB of memory written in their place:")
        for points, r in replayed.items():
            print(f"  {points} points: {r['own_ms_models_run']:.2f} ms ({100 * r['overhead_models_run']:.0f}% of "
                  f"inference {r['inference_ms']:.2f} ms) / " + " / ".join(
                      f"{r['own_ms_' + name]:.2f} ms ({100 * r['overhead_' + name]:.0f}%)" for name in STAND_INS))
    rss_frames = args.rss_frames if args.rss_frames is not None else (2000 if args.quick else 10000)
    if rss_frames:
        start = time.monotonic()
        rss = rss_over_frames(rss_frames, args.threads)
        out["rss_over_frames"] = rss
        print(f"RSS over {rss_frames} frames (1 face 640x480 tracking, {time.monotonic() - start:.0f} s): MB after "
              + ", ".join(f"{n}: {mb:.0f}" for n, mb in rss["peak_rss_mb_after"])
              + f"; growth after the first tenth {rss['growth_mb']:+.1f} MB")
    return out


if __name__ == "__main__":
    sys.exit(main())
