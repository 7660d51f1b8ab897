#!/usr/bin/env python3
"""Speed of the vision core: per stage, raw model inference, pipeline overhead, frames per second.

    python benchmarks/speed.py [--frames 300] [--json speed.json] [--quick]

Scenes are real faces (the bundled public-domain astronaut) tiled 1, 3 or 10 times into 640x480 and
1280x720 frames, each face moving (in-plane turn and scale) so that ROI tracking has work to do. Modes:
`tracking` (landmarks feed the next crop; the detector runs every detect_interval frames) and
`detect-every-frame` (tracking off). "inference" is the time inside onnxruntime alone, measured in the same
run; "overhead" = (frame time - inference) / inference: everything the pipeline adds around the models.

Reference (skip with --no-reference): MediaPipe's own Python face mesh (mediapipe 0.10.21 legacy solution, in a
venv of its own at $FACE3D_REFERENCE_VENV, default ~/.cache/face3d_ros/mediapipe-venv, made on first use; never a
dependency of the package) on the same frames, via benchmarks/mediapipe_reference.py: static_image_mode=False
against our tracking, True against detect-every-frame; 468 points and refine_landmarks=True (478). "thr x" = our
fps / its fps, "lat x" = our ms p50 / its ms p50; "found" = faces found per frame (median), ours/its.
"""
from __future__ import annotations

import argparse
import json
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


def run_scene(n_faces: int, size_name: str, tracking: bool, n_frames: int, warmup: int, threads: int) -> dict:
    config = PipelineConfig().updated({"tracking.enabled": tracking, "backend.threads": threads,
                                       "backend.backend": "cpu"})
    pipeline = FacePipeline(config)
    width, height = SIZES[size_name]
    camera = CameraModel.default_for(width, height)
    frames = list(tiled_frames(n_faces, SIZES[size_name], n_frames + warmup))
    totals, inference, cpu, found = [], [], [], []
    stages = {s: [] for s in STAGES}
    runs_before = 0
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
    totals, inference = np.array(totals), np.array(inference)
    median = float(np.median(totals))
    return {"faces": n_faces, "size": size_name, "mode": "tracking" if tracking else "detect-every-frame",
            "frames": n_frames, "median_ms": median, "p95_ms": float(np.percentile(totals, 95)),
            "fps": 1000.0 / median, "inference_ms": float(np.median(inference)),
            "overhead": float(np.median((totals - inference) / np.maximum(inference, 1e-6))),
            "cpu_ms_per_frame": float(np.median(cpu)), "faces_found_median": float(np.median(found)),
            "detector_run_fraction": (pipeline.detector_runs - runs_before) / n_frames,
            "stage_mean_ms": {s: float(np.mean(v)) for s, v in stages.items()}}


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


def reference_scene(python: Path, n_faces: int, size_name: str, n_frames: int, warmup: int) -> dict:
    """MediaPipe's face mesh on the frames run_scene uses: {"tracking"|"detect-every-frame": {...}} or {"error"}."""
    with tempfile.TemporaryDirectory(prefix="face3d-reference-") as tmp:
        frames, out = Path(tmp) / "frames.npz", Path(tmp) / "reference.json"
        with zipfile.ZipFile(frames, "w") as npz:   # written one frame at a time, as np.savez would store them
            for i, (image, _) in enumerate(tiled_frames(n_faces, SIZES[size_name], n_frames + warmup)):
                with npz.open(f"frame_{i:05d}.npy", "w", force_zip64=True) as f:
                    np.lib.format.write_array(f, image)     # BGR, as our pipeline gets them
        env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "PYTHONHOME")}
        proc = subprocess.run([str(python), "-I", str(REFERENCE_SCRIPT), str(frames), "--max-faces", str(n_faces),
                               "--warmup", str(warmup), "--mode", "both", "--refine", "both", "--json", str(out)],
                              capture_output=True, text=True, env=env)
        if proc.returncode or not out.exists():
            return {"error": (proc.stderr.strip().splitlines() or [f"exit status {proc.returncode}"])[-1]}
        report = json.loads(out.read_text())
    scene = {}
    for run in report.pop("runs"):
        mode = "tracking" if run["mode"] == "tracking" else "detect-every-frame"
        scene.setdefault(mode, {})["face_mesh_refined" if run["refine_landmarks"] else "face_mesh"] = run
    return {"mediapipe": report, **scene}


def compare(ours: dict, reference: dict) -> tuple[dict, str]:
    """Ratios of ours to the reference runs for our row's mode (put into the JSON) and the columns to print."""
    if "error" in reference:
        return {"error": reference["error"]}, f" | reference failed: {reference['error']}"
    runs, cols = reference.get(ours["mode"], {}), ""
    for key in ("face_mesh", "face_mesh_refined"):
        run = runs.get(key)
        if run is None or "error" in run:
            cols += f" | {key}: {run['error'] if run else 'missing'}"
            continue
        run["throughput_ratio"] = ours["fps"] / run["fps"]
        run["latency_ratio"] = ours["median_ms"] / run["median_ms"]
        run["cpu_ratio"] = ours["cpu_ms_per_frame"] / run["cpu_ms_per_frame"]   # less sensitive to a busy machine
        run["same_faces"] = run["faces_found_median"] == ours["faces_found_median"]
        found = f"{ours['faces_found_median']:g}/{run['faces_found_median']:g}" + ("" if run["same_faces"] else "!")
        cols += (f" | {run['median_ms']:6.2f} {run['fps']:6.1f} {found:>6} {run['throughput_ratio']:5.2f} "
                 f"{run['latency_ratio']:5.2f}")
    return runs, cols


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--frames", type=int, default=300)
    parser.add_argument("--warmup", type=int, default=20)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--quick", action="store_true", help="one face at 640x480 only")
    parser.add_argument("--json", type=Path)
    parser.add_argument("--no-reference", dest="reference", action="store_false",
                        help="skip MediaPipe's own face mesh as a reference")
    args = parser.parse_args(argv)
    ref_python, skipped = reference_python() if args.reference else (None, "--no-reference")
    if args.reference and ref_python is None:
        print(f"reference skipped: {skipped}")
    scenes = [(1, "640x480")] if args.quick else [(n, s) for s in SIZES for n in FACE_COUNTS]
    results = []
    header = (f"{'faces':>5} {'size':>9} {'mode':>19} {'ms p50':>7} {'p95':>6} {'fps':>6} {'infer':>6} "
              f"{'ovh':>5} {'cpu ms':>6} {'det%':>5} " + " ".join(f"{s:>9}" for s in STAGES))
    if ref_python:
        header += "".join(f" | {name + ' p50':>6} {'fps':>6} {'found':>6} {'thr x':>5} {'lat x':>5}"
                          for name in ("mp468", "mp478"))
    print(header)
    reference_info = {}
    for n_faces, size_name in scenes:
        ref = reference_scene(ref_python, n_faces, size_name, args.frames, args.warmup) if ref_python else None
        reference_info = (ref or {}).get("mediapipe", reference_info)
        for tracking in (True, False):
            r = run_scene(n_faces, size_name, tracking, args.frames, args.warmup, args.threads)
            results.append(r)
            r["reference"], ref_cols = compare(r, ref) if ref else ({"skipped": skipped}, "")
            print(f"{r['faces']:>5} {r['size']:>9} {r['mode']:>19} {r['median_ms']:7.2f} {r['p95_ms']:6.2f} "
                  f"{r['fps']:6.1f} {r['inference_ms']:6.2f} {100 * r['overhead']:4.0f}% {r['cpu_ms_per_frame']:6.2f} "
                  f"{100 * r['detector_run_fraction']:4.0f}% "
                  + " ".join(f"{r['stage_mean_ms'][s]:9.2f}" for s in STAGES) + ref_cols, flush=True)
    peak_rss_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(f"peak RSS {peak_rss_mb:.0f} MB; machine: {platform.processor() or platform.machine()}, "
          f"{__import__('os').cpu_count()} cores; stage columns are mean ms per frame")
    if ref_python:
        print("mp468/mp478: MediaPipe's own face mesh (short-range detector, TFLite + XNNPACK) on the same frames; "
              "thr x = our fps / its fps, lat x = our p50 / its p50; '!': it found a different number of faces")
    if args.json:
        args.json.write_text(json.dumps({"results": results, "peak_rss_mb": peak_rss_mb,
                                         "machine": platform.platform(), "reference": reference_info}, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
