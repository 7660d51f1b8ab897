#!/usr/bin/env python3
"""Temporal stability: static jitter, lag on known motion, id switches and the detector's duty cycle.

    python benchmarks/stability.py [--json stability.json] [--videos ../shared/data/videos]

1. Static jitter: the bundled astronaut, still, 640x480 at 30 Hz, with per-frame sensor noise (sigma 3
   grey levels) and JPEG (quality 85): RMS rotation (deg) and translation (mm) about the mean, smoothing
   off and on.
2. Lag: the image turned in-plane at 60 deg/s (the roll ground truth is known), and scaled over time (the
   depth ratio is known): the lag, in frames, of the smoothed output behind the unsmoothed one (and of the
   unsmoothed one behind the truth), found as the time shift that best aligns the two series.
3. Tracks on real videos (../shared/data/videos): ids, id switches on the continuous single-face clip,
   track fragments, and how often the detector ran.
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import cv2
import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from face3d_ros.core import CameraModel, FacePipeline, PipelineConfig  # noqa: E402
from face3d_ros.core.geometry import yaw_pitch_roll_deg  # noqa: E402
from face3d_ros.core.synthetic import Motion, moving_face  # noqa: E402

FPS = 30.0
SIZE = (640, 480)
CAMERA = CameraModel.from_focal(*SIZE, 600.0)
VIDEOS = Path(__file__).resolve().parents[2] / "shared" / "data" / "videos"


def pipeline_for(smoothing: bool, **overrides) -> FacePipeline:
    return FacePipeline(PipelineConfig().updated({"smoothing.enabled": smoothing, **overrides}))


def run(pipeline: FacePipeline, frames) -> list:
    """The first face's (R, t) per frame (None where no face was published)."""
    out = []
    for frame in frames:
        faces = pipeline.process(frame.image, CAMERA, frame.stamp_ns)
        out.append((faces[0].R_cam_face, faces[0].t_cam_face) if faces else None)
    return out


def rotation_angle_deg(R: np.ndarray) -> float:
    return float(np.degrees(np.arccos(np.clip((np.trace(R) - 1) / 2, -1, 1))))


def static_jitter(smoothing: bool, n_frames: int) -> dict:
    motion = Motion(noise_sigma=3.0, jpeg_quality=85)
    poses = [p for p in run(pipeline_for(smoothing), moving_face(n_frames, FPS, motion, SIZE))[10:] if p]
    Rs = np.array([R for R, _ in poses])
    ts = np.array([t for _, t in poses])
    # mean rotation: the closest rotation to the mean matrix
    u, _, vt = np.linalg.svd(Rs.mean(0))
    R_mean = u @ vt
    rot = np.array([rotation_angle_deg(R_mean.T @ R) for R in Rs])
    trans = np.linalg.norm(ts - ts.mean(0), axis=1) * 1000
    return {"frames": len(poses), "rms_rotation_deg": float(np.sqrt((rot ** 2).mean())),
            "rms_translation_mm": float(np.sqrt((trans ** 2).mean()))}


def best_shift(signal: np.ndarray, reference: np.ndarray, max_shift: float = 10.0, fitted: bool = False) -> float:
    """Frames by which `signal` trails `reference` (fractional; both on the same frame grid). `fitted`: the
    reference is in other units (e.g. a scale against a depth in metres): at each shift it is first mapped onto
    the signal by a least-squares gain and offset."""
    frames = np.arange(len(reference), dtype=float)
    shifts = np.arange(-2.0, max_shift, 0.05)
    valid = ~np.isnan(signal) & ~np.isnan(reference)
    errors = []
    for s in shifts:
        shifted = np.interp(frames - s, frames[valid], reference[valid])
        keep = valid & (frames - s >= 0) & (frames - s <= len(reference) - 1)
        if fitted:
            gain, offset = np.polyfit(shifted[keep], signal[keep], 1)
            shifted = gain * shifted + offset
        errors.append(np.mean((signal[keep] - shifted[keep]) ** 2))
    return float(shifts[int(np.argmin(errors))])


def roll_deg(pose) -> float:
    return np.nan if pose is None else yaw_pitch_roll_deg(pose[0])[2]


def lag(n_frames: int) -> dict:
    """Lag of the smoothed roll and depth behind the unsmoothed ones, and of those behind the truth."""
    roll_motion = Motion(roll_deg_per_s=60.0, roll_start_deg=-45.0)
    scale_motion = Motion(scale_amplitude=0.2, period_s=2.0)
    # The roll truth is a ramp, and a ramp L frames late is the same ramp offset by 60 deg/s x L: the offset
    # that puts the truth in the measured roll (the head's own tilt) cannot be fitted to the ramp without
    # hiding the lag, so it is measured on the still face (truth 0). The slope (the roll's sign) can be.
    still_roll = float(np.nanmedian([roll_deg(p) for p in run(pipeline_for(False),
                                                               moving_face(10, FPS, Motion(), SIZE))]))
    results = {}
    for name, motion, series in (("roll_60deg_s", roll_motion, "roll"), ("scale", scale_motion, "depth")):
        frames = list(moving_face(n_frames, FPS, motion, SIZE))
        truth = np.array([f.roll_deg if series == "roll" else 1.0 / f.scale for f in frames])
        measured = {}
        for smoothing in (False, True):
            poses = run(pipeline_for(smoothing), frames)
            values = [roll_deg(p) if series == "roll" else (np.nan if p is None else p[1][2]) for p in poses]
            measured[smoothing] = np.array(values, dtype=float)
        raw, smooth = measured[False], measured[True]
        if series == "roll":
            valid = ~np.isnan(raw)
            reference, fitted = np.polyfit(truth[valid], raw[valid], 1)[0] * truth + still_roll, False
        else:   # a sine: its scale and offset are fitted at each shift (the depth's units are metres)
            reference, fitted = truth, True
        results[name] = {"raw_behind_truth_frames": best_shift(raw, reference, fitted=fitted),
                         "smoothed_behind_raw_frames": best_shift(smooth, raw),
                         "smoothed_behind_truth_frames": best_shift(smooth, reference, fitted=fitted),
                         "frames_without_face": int(np.isnan(smooth).sum())}
    return results


def video_tracks(path: Path, max_frames: int) -> dict:
    pipeline = pipeline_for(True)
    capture = cv2.VideoCapture(str(path))
    fps = capture.get(cv2.CAP_PROP_FPS) or 25.0
    seen: dict[str, list[int]] = {}
    frames = 0
    while frames < max_frames:
        ok, image = capture.read()
        if not ok:
            break
        for face in pipeline.process(image, None, int(frames * 1e9 / fps)):
            seen.setdefault(face.track_id, []).append(frames)
        frames += 1
    capture.release()
    lengths = sorted((len(v) for v in seen.values()), reverse=True)
    return {"frames": frames, "ids": len(seen), "track_lengths": lengths,
            "short_fragments_under_10_frames": sum(n < 10 for n in lengths),
            "detector_run_fraction": pipeline.detector_runs / max(frames, 1)}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--frames", type=int, default=150)
    parser.add_argument("--videos", type=Path, default=VIDEOS)
    parser.add_argument("--max-video-frames", type=int, default=300)
    parser.add_argument("--json", type=Path)
    args = parser.parse_args(argv)
    report = {"static": {}, "lag": lag(args.frames // 2), "videos": {}}
    for smoothing in (False, True):
        r = static_jitter(smoothing, args.frames)
        report["static"]["smoothed" if smoothing else "raw"] = r
        print(f"static jitter ({'smoothed' if smoothing else 'raw':>8}): rotation {r['rms_rotation_deg']:.3f} deg RMS, "
              f"translation {r['rms_translation_mm']:.2f} mm RMS over {r['frames']} frames")
    for name, r in report["lag"].items():
        print(f"lag {name}: smoothed behind raw {r['smoothed_behind_raw_frames']:.2f} frames, raw behind truth "
              f"{r['raw_behind_truth_frames']:.2f}, smoothed behind truth {r['smoothed_behind_truth_frames']:.2f}"
              f" (frames without a face: {r['frames_without_face']})")
    if args.videos.is_dir():
        for video in sorted(args.videos.glob("*.mp4")):
            r = video_tracks(video, args.max_video_frames)
            report["videos"][video.name] = r
            print(f"{video.name}: {r['frames']} frames, {r['ids']} ids, longest tracks {r['track_lengths'][:5]}, "
                  f"fragments < 10 frames {r['short_fragments_under_10_frames']}, detector ran on "
                  f"{100 * r['detector_run_fraction']:.0f}% of frames")
    else:
        print(f"videos skipped: {args.videos} not found")
    if args.json:
        args.json.write_text(json.dumps(report, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
