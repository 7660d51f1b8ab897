#!/usr/bin/env python3
"""Inference backends side by side: what each one runs on, what the pipeline says about it, how fast it is,
and whether its faces agree with the CPU's.

    python benchmarks/backends.py [--backends cpu,cuda,cuda/no-graph,tensorrt,auto] [--frames 200] [--json backends.json]

For each backend (`backend.backend`), on the same frames (the bundled astronaut, 1 and 3 moving faces, 640x480,
tracking; and detecting every frame):
- the log lines the pipeline wrote while starting (the backend chosen, any fallback) and each model's provider;
- ms per frame (median), ms inside onnxruntime per frame, and each model's mean ms per call;
- against the CPU backend on the same frames: the largest landmark difference (px) and the largest rotation
  (deg) and translation (mm) differences of the poses;
- with `backend.strict`: whether the backend starts, or the reason it refuses to.
The first backend listed is the reference for the differences (cpu by default); `NAME/no-graph` runs a backend
with `backend.cuda_graph` off. Needs no ROS; on a machine
without a GPU, cuda/tensorrt/auto show the fallback to the CPU.
"""
from __future__ import annotations

import argparse
import json
import logging
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))
from face3d_ros.core import CameraModel, FacePipeline, PipelineConfig  # noqa: E402
from face3d_ros.core import backends as backends_module  # noqa: E402
from face3d_ros.core.backends import BackendUnavailable  # noqa: E402
from speed import SIZES, json_safe, tiled_frames  # noqa: E402
from stability import rotation_angle_deg  # noqa: E402

SCENES = [(1, True), (3, True), (1, False)]   # (faces, tracking)


class LogLines(logging.Handler):
    """The face3d_ros log lines written while it is attached (INFO and above)."""

    def __init__(self) -> None:
        super().__init__(logging.INFO)
        self.lines: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.lines.append(f"{record.levelname}: {record.getMessage()}")


def config_for(label: str, faces: int, tracking: bool, strict: bool = False) -> PipelineConfig:
    backend, _, variant = label.partition("/")
    if variant not in ("", "no-graph"):
        raise SystemExit(f"unknown backend variant {label!r} (NAME or NAME/no-graph)")
    return PipelineConfig().updated({"backend.backend": backend, "backend.strict": strict,
                                     "backend.cuda_graph": variant != "no-graph",
                                     "tracking.enabled": tracking, "detector.max_faces": faces,
                                     "landmarks.second_pass": False, "landmarks.mirror_average": False})


def start(backend: str, faces: int, tracking: bool) -> tuple[FacePipeline, list[str], float]:
    handler = LogLines()
    backends_module._fallbacks_reported.clear()   # each row shows its own fallback warnings (warned once per process)
    logger = logging.getLogger("face3d_ros")
    logger.addHandler(handler)
    level = logger.level
    logger.setLevel(logging.INFO)
    began = time.perf_counter()
    try:
        pipeline = FacePipeline(config_for(backend, faces, tracking))
    finally:
        logger.removeHandler(handler)
        logger.setLevel(level)
    return pipeline, handler.lines, time.perf_counter() - began


def run(pipeline: FacePipeline, frames: list, warmup: int) -> dict:
    camera = CameraModel.default_for(*SIZES["640x480"])
    totals, inference, results = [], [], []
    calls_before = {}
    for i, (image, stamp_ns) in enumerate(frames):
        if i == warmup:
            calls_before = {m.path.name: (m.calls, m.inference_s) for m in pipeline.models}
        before = pipeline.inference_ms
        begin = time.perf_counter()
        faces = pipeline.process(image, camera, stamp_ns)
        elapsed = (time.perf_counter() - begin) * 1e3
        results.append([(f.landmarks_px[:, :2].copy(), f.R_cam_face.copy(), f.t_cam_face.copy()) for f in faces])
        if i >= warmup:
            totals.append(elapsed)
            inference.append(pipeline.inference_ms - before)
    per_call = {}
    for model in pipeline.models:
        calls, seconds = calls_before.get(model.path.name, (0, 0.0))
        if model.calls > calls:
            per_call[model.path.name] = (model.inference_s - seconds) * 1e3 / (model.calls - calls)
    return {"ms_per_frame": float(np.median(totals)), "inference_ms_per_frame": float(np.median(inference)),
            "fps": 1e3 / float(np.median(totals)), "model_ms_per_call": per_call,
            "providers": {m.path.name: m.active_provider for m in pipeline.models}, "faces": results}


def differences(faces: list, reference: list) -> dict:
    """Largest differences over all frames between two runs' faces (matched by order: the same frames give the
    same faces in the same order unless a backend finds a different number)."""
    landmark_px, rotation_deg, translation_mm, count_mismatch = 0.0, 0.0, 0.0, 0
    for ours, theirs in zip(faces, reference):
        if len(ours) != len(theirs):
            count_mismatch += 1
            continue
        for (p, R, t), (p0, R0, t0) in zip(ours, theirs):
            landmark_px = max(landmark_px, float(np.abs(p - p0).max()))
            rotation_deg = max(rotation_deg, rotation_angle_deg(R0.T @ R))
            translation_mm = max(translation_mm, float(np.linalg.norm(t - t0)) * 1e3)
    return {"landmark_px_max": landmark_px, "rotation_deg_max": rotation_deg,
            "translation_mm_max": translation_mm, "frames_with_other_face_count": count_mismatch}


def strict_check(backend: str) -> str:
    try:
        FacePipeline(config_for(backend, 1, True, strict=True))
    except BackendUnavailable as err:
        return f"refused: {err}"
    return "started"


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--backends", default="cpu,cuda,cuda/no-graph,tensorrt,auto",
                        help="comma-separated; the first is the reference for the differences")
    parser.add_argument("--frames", type=int, default=200)
    parser.add_argument("--warmup", type=int, default=20)
    parser.add_argument("--json", type=Path)
    args = parser.parse_args(argv)
    backends = [b.strip() for b in args.backends.split(",") if b.strip()]
    report = {"backends": backends, "scenes": []}
    import onnxruntime as ort
    print(f"onnxruntime {ort.__version__}, providers in this build: {', '.join(ort.get_available_providers())}")
    for faces, tracking in SCENES:
        frames = list(tiled_frames(faces, SIZES["640x480"], args.frames + args.warmup))
        mode = "tracking" if tracking else "detect every frame"
        reference = None
        for backend in backends:
            pipeline, lines, startup_s = start(backend, faces, tracking)
            result = run(pipeline, frames, args.warmup)
            if reference is None:
                reference = result["faces"]
            row = {"faces": faces, "mode": mode, "backend": backend, "startup_s": startup_s, "log": lines,
                   **{k: v for k, v in result.items() if k != "faces"}, **differences(result["faces"], reference)}
            report["scenes"].append(row)
            providers = sorted(set(row["providers"].values()))
            print(f"\n{faces} face(s), {mode}, backend {backend}: {', '.join(providers)}; started in {startup_s:.1f} s")
            for line in lines:
                print(f"  log: {line}")
            per_call = ", ".join(f"{name} {ms:.2f}" for name, ms in row["model_ms_per_call"].items())
            print(f"  {row['ms_per_frame']:.2f} ms/frame ({row['fps']:.0f} fps), inference {row['inference_ms_per_frame']:.2f}"
                  f" ms/frame; per call: {per_call}")
            print(f"  vs {backends[0]}: landmarks <= {row['landmark_px_max']:.4f} px, rotation <= "
                  f"{row['rotation_deg_max']:.4f} deg, translation <= {row['translation_mm_max']:.4f} mm, "
                  f"{row['frames_with_other_face_count']} frames with another face count")
    report["strict"] = {backend: strict_check(backend) for backend in backends}
    print("\nbackend.strict:")
    for backend, outcome in report["strict"].items():
        print(f"  {backend}: {outcome}")
    print("\n| faces | mode | backend | providers | ms/frame | fps | inference ms | landmarks px | rotation deg | translation mm |")
    print("|---|---|---|---|---|---|---|---|---|---|")
    for row in report["scenes"]:
        providers = "+".join(sorted({p.replace("ExecutionProvider", "") for p in row["providers"].values()}))
        print(f"| {row['faces']} | {row['mode']} | {row['backend']} | {providers} | {row['ms_per_frame']:.2f} | "
              f"{row['fps']:.0f} | {row['inference_ms_per_frame']:.2f} | {row['landmark_px_max']:.4f} | "
              f"{row['rotation_deg_max']:.4f} | {row['translation_mm_max']:.3f} |")
    if args.json:
        args.json.write_text(json.dumps(json_safe(report), indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
