#!/usr/bin/env python3
"""The reference: MediaPipe's own Python face mesh (the legacy solution), timed on the frames of a benchmark scene
(speed.py) or giving its landmarks for the accuracy benchmark (aflw2000.py --reference).

Runs INSIDE a separate venv that has mediapipe==0.10.21; it never imports face3d_ros or onnxruntime.
benchmarks/speed.py makes that venv and calls this script; by hand:

    python mediapipe_reference.py FRAMES --max-faces 3 --warmup 20 [--mode tracking|static|both]
                                  [--refine no|yes|both] [--json out.json]
    python mediapipe_reference.py FRAMES --serve --mode tracking --refine no    # interleaved blocks, see below
    python mediapipe_reference.py FRAMES --landmarks out.json --mode static --refine no --max-faces 5

FRAMES is an .npz (keys frame_00000, frame_00001, ... each HxWx3 uint8, or one NxHxWx3 array `frames`; optional
`channel_order` "bgr" (default, as OpenCV and our pipeline see them) or "rgb") or a folder of PNGs (sorted by name).
Each frame is converted to RGB before the clock starts. Modes: `tracking` = static_image_mode=False (MediaPipe's
tracking: the ROI comes from the previous frame's landmarks, the short-range detector runs only while fewer than
max_num_faces faces are tracked), `static` = static_image_mode=True (detector on every frame). `--refine yes` is
refine_landmarks=True: the attention model, 478 points with irises.

Every (mode, refine) configuration runs in a fresh process of its own, so that its peak RSS and its thread
count are its own. Per configuration: per-frame wall ms after warmup, median, p95, fps (1000 / median), faces
found per frame, CPU ms per frame (time.process_time: every thread of the process), peak RSS, and the threads:
how many the process has, and which of them did the work (per-thread CPU time from /proc/self/task).
MediaPipe's TFLite inference uses XNNPACK with 1 thread by default on desktop Linux; its graph scheduler runs
calculators on a thread pool of its own, which is why the busy threads are measured rather than assumed.

`--serve` (one configuration): one face mesh that stays up and processes blocks of frames on request, so that
benchmarks/speed.py can interleave it with our pipeline block by block (a shared machine's speed drifts within
seconds). It reads one JSON list of frame indices per line on stdin and answers each with one JSON line:
{"ms": [...], "cpu_ms": ..., "faces": [...]} (wall ms per frame, CPU ms of the whole block, faces per frame);
an empty line or end of input stops it.

`--landmarks OUT` (one configuration): no timing; writes the landmarks of every face found in every frame, for
benchmarks/aflw2000.py's reference rows: {"frames": [{"width": w, "height": h, "faces": [face, ...]}, ...]}, a face
being {"landmarks_px": [[x, y, z], ...]} in pixels (x, y in the image; z, MediaPipe's relative depth, scaled by the
image width as x is).
"""
from __future__ import annotations

import argparse
import importlib.metadata
import json
import os
import platform
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

MODES = {"tracking": False, "static": True}      # name -> static_image_mode
REFINE = {"no": (False,), "yes": (True,), "both": (False, True)}


class Frames:
    """Frames read lazily (one in memory at a time, so the peak RSS is the face mesh's, not the clip's)."""

    def __init__(self, path: Path):
        self.path = path
        if path.is_dir():
            self.files = sorted(path.glob("*.png"))
            self.rgb = False
            self.npz = None
            self.keys = [str(f) for f in self.files]
        else:
            self.npz = np.load(path, allow_pickle=False)
            order = str(self.npz["channel_order"]) if "channel_order" in self.npz.files else "bgr"
            self.rgb = order.lower() == "rgb"
            if "frames" in self.npz.files:
                self.stack = self.npz["frames"]
                self.keys = list(range(len(self.stack)))
            else:
                self.stack = None
                self.keys = sorted(k for k in self.npz.files if k.startswith("frame_"))
        if not self.keys:
            raise SystemExit(f"no frames in {path}")

    def __len__(self):
        return len(self.keys)

    def rgb_frame(self, i: int) -> np.ndarray:
        if self.npz is None:
            import cv2  # mediapipe depends on opencv-contrib-python, so it is in the venv
            image = cv2.imread(self.keys[i], cv2.IMREAD_COLOR)
            rgb = False
        else:
            image = self.stack[self.keys[i]] if self.stack is not None else self.npz[self.keys[i]]
            rgb = self.rgb
        if image.ndim != 3 or image.shape[2] != 3 or image.dtype != np.uint8:
            raise SystemExit(f"frame {i}: expected HxWx3 uint8, got {image.shape} {image.dtype}")
        return np.ascontiguousarray(image if rgb else image[..., ::-1])


def thread_cpu() -> dict[int, tuple[str, float]]:
    """tid -> (thread name, CPU seconds) for every thread of this process (Linux; empty elsewhere)."""
    out = {}
    tick = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100
    try:
        tids = os.listdir("/proc/self/task")
    except OSError:
        return out
    for tid in tids:
        try:
            stat = Path(f"/proc/self/task/{tid}/stat").read_text()
            name = Path(f"/proc/self/task/{tid}/comm").read_text().strip()
        except OSError:
            continue
        fields = stat[stat.rindex(")") + 2:].split()
        out[int(tid)] = (name, (int(fields[11]) + int(fields[12])) / tick)   # utime + stime
    return out


def busy_threads(before: dict, after: dict, share: float = 0.05) -> list[dict]:
    """Threads that used at least `share` of the process's CPU time between two thread_cpu() snapshots."""
    used = {tid: (name, cpu - before.get(tid, (name, 0.0))[1]) for tid, (name, cpu) in after.items()}
    total = sum(c for _, c in used.values()) or 1e-9
    busy = [{"name": name, "cpu_s": round(c, 3), "share": round(c / total, 3)}
            for name, c in used.values() if c / total >= share]
    return sorted(busy, key=lambda t: -t["cpu_s"])


def face_mesh(static: bool, refine: bool, max_faces: int):
    """MediaPipe's legacy face mesh solution with its default confidences."""
    import mediapipe as mp

    return mp.solutions.face_mesh.FaceMesh(static_image_mode=static, max_num_faces=max_faces,
                                           refine_landmarks=refine, min_detection_confidence=0.5,
                                           min_tracking_confidence=0.5)


def run_one(frames: Frames, static: bool, refine: bool, max_faces: int, warmup: int) -> dict:
    threads_at_start = len(thread_cpu())
    mesh = face_mesh(static, refine, max_faces)
    ms, cpu, found, points = [], [], [], 0
    threads_before = None
    with mesh:
        for i in range(len(frames)):
            image = frames.rgb_frame(i)                      # read + RGB outside the clock
            if i == warmup:
                threads_before = thread_cpu()
                wall_start, cpu_start = time.perf_counter(), time.process_time()
            c0 = time.process_time()
            t0 = time.perf_counter()
            result = mesh.process(image)
            elapsed = (time.perf_counter() - t0) * 1e3
            if i < warmup:
                continue
            ms.append(elapsed)
            cpu.append((time.process_time() - c0) * 1e3)
            faces = result.multi_face_landmarks or []
            found.append(len(faces))
            if faces:
                points = max(points, len(faces[0].landmark))
        threads_after = thread_cpu()
        wall_total = time.perf_counter() - wall_start if threads_before is not None else 0.0
        cpu_total = time.process_time() - cpu_start if threads_before is not None else 0.0
    if not ms:
        raise SystemExit(f"only {len(frames)} frames for warmup {warmup}")
    arr = np.array(ms)
    median = float(np.median(arr))
    return {"mode": "tracking" if not static else "static", "static_image_mode": static,
            "refine_landmarks": refine, "points": points or (478 if refine else 468),
            "max_num_faces": max_faces, "frames": len(ms), "warmup": warmup,
            "median_ms": median, "p95_ms": float(np.percentile(arr, 95)), "mean_ms": float(arr.mean()),
            "fps": 1000.0 / median,
            "faces_found_median": float(np.median(found)), "faces_found_mean": float(np.mean(found)),
            "faces_found_min": int(min(found)), "faces_found_max": int(max(found)),
            "cpu_ms_per_frame": float(np.median(cpu)),
            "cpu_per_wall": cpu_total / wall_total if wall_total else None,
            "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
            "threads": {"at_start": threads_at_start, "total": len(threads_after),
                        "busy": busy_threads(threads_before or {}, threads_after),
                        "xnnpack_threads_default": 1},
            "ms": [round(v, 4) for v in ms]}


def serve(frames: Frames, static: bool, refine: bool, max_faces: int) -> None:
    """Blocks of frames on request (see --serve in the module docstring); the face mesh keeps its state."""
    images = [frames.rgb_frame(i) for i in range(len(frames))]   # decoded up front: the blocks are timed alone
    mesh = face_mesh(static, refine, max_faces)
    with mesh:
        print(json.dumps({"ready": len(images)}), flush=True)
        for line in sys.stdin:
            if not line.strip():
                break
            ms, faces = [], []
            cpu_start = time.process_time()
            for i in json.loads(line):
                t0 = time.perf_counter()
                result = mesh.process(images[i])
                ms.append((time.perf_counter() - t0) * 1e3)
                faces.append(len(result.multi_face_landmarks or []))
            cpu_ms = (time.process_time() - cpu_start) * 1e3
            print(json.dumps({"ms": ms, "cpu_ms": cpu_ms, "faces": faces}), flush=True)


def landmarks(frames: Frames, static: bool, refine: bool, max_faces: int) -> dict:
    """Every frame's faces as pixel landmarks (see --landmarks in the module docstring)."""
    found = []
    with face_mesh(static, refine, max_faces) as mesh:
        for i in range(len(frames)):
            image = frames.rgb_frame(i)
            h, w = image.shape[:2]
            result = mesh.process(image)
            found.append({"width": w, "height": h,
                          "faces": [{"landmarks_px": [[p.x * w, p.y * h, p.z * w] for p in face.landmark]}
                                    for face in result.multi_face_landmarks or []]})
    return {"mediapipe_version": importlib.metadata.version("mediapipe"), "static_image_mode": static,
            "refine_landmarks": refine, "max_num_faces": max_faces, "frames": found}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("frames", type=Path, help=".npz of frames or a folder of PNGs")
    parser.add_argument("--max-faces", type=int, default=1, help="max_num_faces")
    parser.add_argument("--warmup", type=int, default=20, help="frames processed but not timed")
    parser.add_argument("--mode", choices=("tracking", "static", "both"), default="both")
    parser.add_argument("--refine", choices=tuple(REFINE), default="both")
    parser.add_argument("--json", type=Path, help="write the results here (default: stdout)")
    parser.add_argument("--serve", action="store_true",
                        help="process blocks of frames on request (stdin/stdout JSON lines; one --mode and --refine)")
    parser.add_argument("--landmarks", type=Path, metavar="OUT",
                        help="write every frame's face landmarks to OUT (JSON; one --mode and --refine), no timing")
    args = parser.parse_args(argv)

    if (args.serve or args.landmarks) and (args.mode == "both" or args.refine == "both"):
        parser.error("--serve and --landmarks run one configuration: give --mode and --refine")
    if args.serve:
        serve(Frames(args.frames), MODES[args.mode], REFINE[args.refine][0], args.max_faces)
        return 0
    if args.landmarks:
        found = landmarks(Frames(args.frames), MODES[args.mode], REFINE[args.refine][0], args.max_faces)
        args.landmarks.write_text(json.dumps(found))
        return 0

    configs = [(m, r) for m in (MODES if args.mode == "both" else (args.mode,)) for r in REFINE[args.refine]]
    if len(configs) == 1:
        mode, refine = configs[0]
        frames = Frames(args.frames)
        runs = [run_one(frames, MODES[mode], refine, args.max_faces, args.warmup)]
    else:   # one fresh process per configuration
        runs = []
        with tempfile.TemporaryDirectory() as tmp:
            for mode, refine in configs:
                out = Path(tmp) / f"{mode}-{refine}.json"
                cmd = [sys.executable, str(Path(__file__).resolve()), str(args.frames), "--max-faces",
                       str(args.max_faces), "--warmup", str(args.warmup), "--mode", mode,
                       "--refine", "yes" if refine else "no", "--json", str(out)]
                proc = subprocess.run(cmd, capture_output=True, text=True)
                if proc.returncode or not out.exists():
                    lines = proc.stderr.strip().splitlines() or [f"exit status {proc.returncode}"]
                    runs.append({"mode": mode, "static_image_mode": MODES[mode], "refine_landmarks": refine,
                                 "error": lines[-1]})
                else:
                    runs.extend(json.loads(out.read_text())["runs"])
    first = Frames(args.frames).rgb_frame(0)
    report = {"mediapipe_version": importlib.metadata.version("mediapipe"), "python": platform.python_version(),
              "machine": platform.platform(), "cpu_count": os.cpu_count(), "input": str(args.frames),
              "size": [int(first.shape[1]), int(first.shape[0])],
              "detector": "face_detection_short_range (BlazeFace 128x128), MediaPipe's own TFLite + XNNPACK",
              "runs": runs}
    text = json.dumps(report, indent=1)
    if args.json:
        args.json.write_text(text)
    else:
        print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
