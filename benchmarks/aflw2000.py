#!/usr/bin/env python3
"""Head-pose MAE and 68-point NME on AFLW2000-3D-format data, with the miss rate beside them.

    python benchmarks/aflw2000.py --data ../shared/data/aflw2000_prnet16 [--json out.json] [--reference]

Protocol (see README "Accuracy"): the pose MAE leaves out images whose labelled |yaw|, |pitch| or |roll|
exceed 99 deg; the camera is a pinhole with fx = fy = image width, centred; the face is the detection whose
box overlaps the ground-truth 68-point box most, with an IoU of at least MATCH_MIN_IOU (true matches score
0.52-0.90, turned and zoomed ones included); an image with no such face counts as MISSED and is left out of
the MAE (so read the two numbers together). Angles follow ../shared/notes/aflw2000.md: Pose_Para = [pitch,
yaw, roll, ...] in radians; an estimate is compared in the form of its Euler angles nearest the label (a
rotation has two: (yaw, pitch, roll) and (+-180 - yaw, pitch + 180, roll + 180); asin gives |yaw| <= 90,
the labels go to 99). NME (3DDFA's protocol) = mean 2D landmark error / sqrt(w * h) of the ground-truth
68-point box, on every labelled image, per |yaw| bin [0, 30], (30, 60], (60, 90+] and their mean.
Images are *.jpg/*.jpeg/*.png (any case) with a .mat beside them; images without one, unreadable images and
labels without the pose or 68 points are counted and reported, never scored.

The MAE is of the camera-relative angles (the pose in the camera frame, as the pipeline publishes it). The
labels are weak-perspective fits, i.e. relative to the line of sight to the face: the MAE of the angles
relative to the line of sight (geometry.yaw_pitch_roll_line_of_sight_deg) is printed beside it, with the
signed mean errors (estimate - label) of both (a bias common to all faces shows there).

`--reference`: the baseline on the same images, scored by the same code: MediaPipe's own Python face mesh
(mediapipe 0.10.21, static_image_mode=True, run by benchmarks/mediapipe_reference.py in the venv speed.py makes)
with a plain PnP, with our pose fit, and its refine_landmarks=True points with our pose fit.
"""
from __future__ import annotations

import argparse
import json
import math
import sys
import tempfile
import time
from pathlib import Path

import cv2
import numpy as np
from scipy.io import loadmat  # MATLAB v5 reader: plain arrays, no code execution
from scipy.io.matlab import MatReadError

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from face3d_ros.core import CameraModel, FacePipeline, PipelineConfig  # noqa: E402
from face3d_ros.core.geometry import (MESH_POINTS, HeadPoseSolver, landmarks_68, yaw_pitch_roll_deg,  # noqa: E402
                                      yaw_pitch_roll_line_of_sight_deg)
from face3d_ros.core.roi import box_iou, landmark_box  # noqa: E402
from face3d_ros.core.types import Face, InputError  # noqa: E402
from speed import call_reference, json_safe, reference_python, write_npz  # noqa: E402  (beside this script)

PROTOCOL_MAX_DEG = 99.0
YAW_BINS = ((0, 30), (30, 60), (60, 90))    # the last bin takes every |yaw| over 60
MATCH_MIN_IOU = 0.3
IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png")


class LabelError(ValueError):
    """A .mat that holds no usable label."""


def load_label(mat_path: Path) -> tuple[np.ndarray, np.ndarray]:
    """(yaw, pitch, roll) in degrees and the (68, 2) ground-truth points in image pixels."""
    try:
        mat = loadmat(str(mat_path))
        pitch, yaw, roll = np.degrees(np.asarray(mat["Pose_Para"], dtype=np.float64).reshape(-1)[:3])
        # AFLW2000-3D: pt3d_68 (its pt2d holds 21 AFLW points); 300W-LP: pt2d holds the 68 points
        points = np.asarray(mat["pt3d_68"] if "pt3d_68" in mat else mat["pt2d"], dtype=np.float64)[:2].T
    except (OSError, MatReadError, KeyError, ValueError, TypeError, IndexError) as err:
        raise LabelError(f"{mat_path.name}: {type(err).__name__} {err}") from err
    if points.shape != (68, 2):
        raise LabelError(f"{mat_path.name}: no 68-point landmarks (pt3d_68, or pt2d with 68 points)")
    return np.array([yaw, pitch, roll]), points


def labelled_images(data: Path, limit: int = 0, skipped: dict | None = None):
    """(image path, (yaw, pitch, roll) deg, (68, 2) points) of every image with a usable .mat, in name order;
    the others are counted in `skipped` by reason ("no_label", "bad_label")."""
    skipped = {} if skipped is None else skipped
    paths = sorted(p for p in data.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES and p.is_file())
    for image_path in paths[:limit or None]:
        label_path = image_path.with_suffix(".mat")
        if not label_path.exists():
            skipped["no_label"] = skipped.get("no_label", 0) + 1
            continue
        try:
            truth, points = load_label(label_path)
        except LabelError as err:
            skipped["bad_label"] = skipped.get("bad_label", 0) + 1
            print(f"skipped: {err}", file=sys.stderr)
            continue
        yield image_path, truth, points


def in_protocol(truth: np.ndarray) -> bool:
    return not np.any(np.abs(truth) > PROTOCOL_MAX_DEG)


def points_box(points: np.ndarray) -> np.ndarray:
    return np.concatenate([points.min(0), points.max(0)])


def labelled_face(points: np.ndarray, faces: list):
    """The found face overlapping the labelled one (its 68-point box) most, or None where none overlaps it
    by MATCH_MIN_IOU: the face is missed (a sliver of overlap is another face, or a wrong box)."""
    if not faces:
        return None
    overlap = box_iou(points_box(points)[None], np.array([f.bbox for f in faces]))[0]
    return faces[int(np.argmax(overlap))] if overlap.max() >= MATCH_MIN_IOU else None


def signed_angle_error(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    return (np.asarray(a) - b + 180.0) % 360.0 - 180.0


def angle_error(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    return np.abs(signed_angle_error(a, b))


def nearest_euler(estimate: np.ndarray, truth: np.ndarray) -> np.ndarray:
    """(yaw, pitch, roll) of the estimate in the form of its two Euler-angle forms nearer the label's:
    (yaw, pitch, roll) and (+-180 - yaw, pitch + 180, roll + 180) are one rotation."""
    yaw, pitch, roll = estimate
    other = signed_angle_error(np.array([math.copysign(180.0, yaw) - yaw, pitch + 180.0, roll + 180.0]), 0.0)
    return min((np.asarray(estimate, dtype=np.float64), other), key=lambda e: angle_error(e, truth).sum())


def score(image_name: str, truth: np.ndarray, points: np.ndarray, faces: list) -> dict:
    """One image's row: missed, or the found face's angle errors and 68-point NME."""
    row = {"image": image_name, "yaw_pitch_roll_true": truth.round(3).tolist(), "in_protocol": in_protocol(truth),
           "missed": True}
    face = labelled_face(points, faces)
    if face is not None:
        box = points_box(points)
        estimate = nearest_euler(yaw_pitch_roll_deg(face.R_cam_face), truth)
        estimate_los = nearest_euler(yaw_pitch_roll_line_of_sight_deg(face.R_cam_face, face.t_cam_face), truth)
        norm = np.sqrt((box[2] - box[0]) * (box[3] - box[1]))
        nme = np.linalg.norm(landmarks_68(face.landmarks_px) - points, axis=1).mean() / norm
        row.update(missed=False, yaw_pitch_roll=np.round(estimate, 3).tolist(),
                   error=angle_error(estimate, truth).round(3).tolist(), nme=round(float(nme), 5),
                   signed_error=signed_angle_error(estimate, truth).round(3).tolist(),
                   signed_error_los=signed_angle_error(estimate_los, truth).round(3).tolist(),
                   depth_scale=round(face.depth_scale, 4))
    return row


def read_labelled_images(data: Path, limit: int = 0, skipped: dict | None = None):
    """labelled_images with each image read: (image path, truth, points, BGR image); an unreadable image is
    counted in `skipped` ("unreadable_image")."""
    skipped = {} if skipped is None else skipped
    for image_path, truth, points in labelled_images(data, limit, skipped):
        image = cv2.imread(str(image_path), cv2.IMREAD_COLOR)
        if image is None:
            skipped["unreadable_image"] = skipped.get("unreadable_image", 0) + 1
            print(f"skipped: cannot read {image_path.name}", file=sys.stderr)
            continue
        yield image_path, truth, points, image


def evaluate(data: Path, config: PipelineConfig, limit: int = 0) -> dict:
    pipeline = FacePipeline(config)
    rows, skipped = [], {}
    start = time.perf_counter()
    for image_path, truth, points, image in read_labelled_images(data, limit, skipped):
        h, w = image.shape[:2]
        rows.append(score(image_path.name, truth, points, pipeline.process(image, CameraModel.default_for(w, h))))
    return summarise(rows, skipped, time.perf_counter() - start)


# --- reference: MediaPipe's own face mesh on the same images, in its own venv (see speed.py) ---

REFERENCE_MAX_FACES = 5     # some images hold more than one face; the labelled one is matched as for ours


def mediapipe_landmarks(python: Path, images, refine: bool) -> list[tuple[CameraModel, list]]:
    """MediaPipe face mesh (static_image_mode=True, its default confidences) on each BGR image (any iterable):
    per image, the default camera for its size and the (468 or 478, 3) pixel landmarks of every face found."""
    with tempfile.TemporaryDirectory(prefix="face3d-aflw-") as tmp:
        frames, out = Path(tmp) / "frames.npz", Path(tmp) / "landmarks.json"
        write_npz(frames, images)
        error = call_reference(python, frames, "--landmarks", out, "--mode", "static",
                               "--refine", "yes" if refine else "no", "--max-faces", REFERENCE_MAX_FACES, out=out)
        if error:
            raise RuntimeError(f"MediaPipe reference failed: {error}")
        found = json.loads(out.read_text())["frames"]
    return [(CameraModel.default_for(frame["width"], frame["height"]),
             [np.array(face["landmarks_px"], dtype=np.float64) for face in frame["faces"]]) for frame in found]


def pnp_pose(solver: HeadPoseSolver, landmarks_px: np.ndarray, camera: CameraModel):
    """The plain baseline: the canonical face (metres) fitted to the 468 2D points by SQPnP, then
    Levenberg-Marquardt on the reprojection error (OpenCV), no weights. (R_cam_face, t_cam_face) or None."""
    model = solver.face.vertices_face[:MESH_POINTS]
    image = np.ascontiguousarray(landmarks_px[:MESH_POINTS, :2])
    ok, rvec, tvec = cv2.solvePnP(model, image, camera.K, camera.D, flags=cv2.SOLVEPNP_SQPNP)
    if not ok:
        return None
    rvec, tvec = cv2.solvePnPRefineLM(model, image, camera.K, camera.D, rvec, tvec)
    return cv2.Rodrigues(rvec)[0], tvec.reshape(3)


def reference_faces(landmarks: list[np.ndarray], camera: CameraModel, solver: HeadPoseSolver,
                    fit: str) -> list[Face]:
    """Faces from MediaPipe's landmarks, posed by `fit`: "pnp" (pnp_pose) or "ours" (HeadPoseSolver.solve)."""
    faces = []
    for points in landmarks:
        face = Face(bbox=landmark_box(points), detection_score=1.0, roi=None, landmarks_px=points)
        if fit == "pnp":
            pose = pnp_pose(solver, points, camera)
            if pose is None:
                continue
            face.R_cam_face, face.t_cam_face = pose
        else:
            try:
                pose = solver.solve(points, camera)
            except InputError:
                continue
            face.R_cam_face, face.t_cam_face, face.depth_scale = pose.R_cam_face, pose.t_cam_face, pose.depth_scale
        faces.append(face)
    return faces


REFERENCE_ROWS = (("MediaPipe face mesh (468) + PnP", False, "pnp"),
                  ("MediaPipe face mesh (468) + our pose fit", False, "ours"),
                  ("MediaPipe face mesh refined (478) + our pose fit", True, "ours"))


def evaluate_reference(data: Path, python: Path, config: PipelineConfig, limit: int = 0) -> dict:
    """The REFERENCE_ROWS on the same images, protocol and face matching as ours: {row name: summary}."""
    skipped, kept = {}, []

    def first_read():   # the images streamed to the reference, the labels of those read kept for scoring
        for path, truth, points, image in read_labelled_images(data, limit, skipped):
            kept.append((path, truth, points))
            yield image
    solver = HeadPoseSolver(config.pose, models_dir=config.backend.models_dir)
    results, landmarks = {}, {}
    for name, refine, fit in REFERENCE_ROWS:
        if refine not in landmarks:
            images = (cv2.imread(str(path), cv2.IMREAD_COLOR) for path, _, _ in kept) if landmarks else first_read()
            landmarks[refine] = mediapipe_landmarks(python, images, refine)
        rows = []
        start = time.perf_counter()
        for (path, truth, points), (camera, found) in zip(kept, landmarks[refine]):
            rows.append(score(path.name, truth, points, reference_faces(found, camera, solver, fit)))
        results[name] = summarise(rows, skipped, time.perf_counter() - start)
    return results


PERTURB_ZOOMS = (0.7, 1.0, 1.3)
PERTURB_ROLLS_DEG = (-45, -30, -15, 0, 15, 30, 45)


def perturbed_images(data: Path, limit: int = 0):
    """(zoom, roll, image, (68, 2) points): each protocol image turned in plane and zoomed about its centre
    (edges replicated), its labelled points carried through the same transform."""
    for _, truth, points, image in read_labelled_images(data, limit):
        if not in_protocol(truth):
            continue
        h, w = image.shape[:2]
        for zoom in PERTURB_ZOOMS:
            for roll in PERTURB_ROLLS_DEG:
                M = cv2.getRotationMatrix2D((w / 2.0, h / 2.0), roll, zoom)
                yield (zoom, roll, cv2.warpAffine(image, M, (w, h), borderMode=cv2.BORDER_REPLICATE),
                       points @ M[:, :2].T + M[:, 2])


def count_misses(cases) -> dict:
    """{misses_by_zoom_and_roll, missed, cases} from (zoom, roll, found) triples."""
    misses, count = {}, 0
    for zoom, roll, found in cases:
        row = misses.setdefault(f"{zoom:g}", {})
        row[f"{roll:+d}"] = row.get(f"{roll:+d}", 0) + (not found)
        count += 1
    total = sum(sum(row.values()) for row in misses.values())
    return {"misses_by_zoom_and_roll": misses, "missed": total, "cases": count}


def perturbed_misses(data: Path, config: PipelineConfig, limit: int = 0) -> dict:
    """How often the face is missed in the perturbed_images: a check that finding faces does not hang on the
    sample's exact framing. A face counts as missed when no face found overlaps the labelled one's 68-point
    box carried through the same transform."""
    pipeline = FacePipeline(config)
    return count_misses((zoom, roll, labelled_face(points, pipeline.process(image)) is not None)
                        for zoom, roll, image, points in perturbed_images(data, limit))


def reference_perturbed_misses(data: Path, python: Path, limit: int = 0) -> dict:
    """perturbed_misses for MediaPipe's face mesh (static_image_mode=True, 468 points)."""
    cases = []

    def images():   # each image perturbed once: its case kept here, its pixels streamed to the reference
        for zoom, roll, image, points in perturbed_images(data, limit):
            cases.append((zoom, roll, points))
            yield image
    found = mediapipe_landmarks(python, images(), False)
    return count_misses((zoom, roll, labelled_face(points, [Face(bbox=landmark_box(face), detection_score=1.0,
                                                                 roi=None) for face in faces]) is not None)
                        for (zoom, roll, points), (_, faces) in zip(cases, found))


def yaw_bin(yaw_deg: float) -> tuple[int, int]:
    """The |yaw| bin of YAW_BINS: [0, 30], (30, 60], (60, ...)."""
    return next((lo, hi) for lo, hi in YAW_BINS if abs(yaw_deg) <= hi or hi == YAW_BINS[-1][1])


def summarise(rows: list[dict], skipped: dict, elapsed: float) -> dict:
    """The pose MAE and miss rate over the protocol's rows; the NME per |yaw| bin over all rows."""
    protocol = [r for r in rows if r["in_protocol"]]
    found = [r for r in protocol if not r["missed"]]
    errors = np.array([r["error"] for r in found]).reshape(-1, 3)
    missed = [r for r in protocol if r["missed"]]
    summary = {"images": len(rows) + sum(skipped.values()), "skipped": dict(skipped),
               "protocol_dropped": len(rows) - len(protocol), "evaluated": len(protocol),
               "missed": len(missed), "miss_rate": len(missed) / max(len(protocol), 1),
               "missed_beyond_60deg_yaw": sum(abs(r["yaw_pitch_roll_true"][0]) > 60 for r in missed),
               "mae_yaw": float(errors[:, 0].mean()) if len(found) else float("nan"),
               "mae_pitch": float(errors[:, 1].mean()) if len(found) else float("nan"),
               "mae_roll": float(errors[:, 2].mean()) if len(found) else float("nan"),
               "seconds_per_image": elapsed / max(len(rows), 1)}
    summary["mae_mean"] = (summary["mae_yaw"] + summary["mae_pitch"] + summary["mae_roll"]) / 3
    for key, suffix in (("signed_error", ""), ("signed_error_los", "_los")):
        signed = np.array([r[key] for r in found]).reshape(-1, 3)
        for i, angle in enumerate(("yaw", "pitch", "roll")):
            summary[f"bias_{angle}{suffix}"] = float(signed[:, i].mean()) if len(found) else float("nan")
            if suffix:
                summary[f"mae_{angle}{suffix}"] = float(np.abs(signed[:, i]).mean()) if len(found) else float("nan")
    summary["mae_mean_los"] = (summary["mae_yaw_los"] + summary["mae_pitch_los"] + summary["mae_roll_los"]) / 3
    for lo, hi in YAW_BINS:
        in_bin = [r for r in rows if yaw_bin(r["yaw_pitch_roll_true"][0]) == (lo, hi)]
        nme = [r["nme"] for r in in_bin if not r["missed"]]
        summary[f"nme_yaw_{lo}_{hi}"] = float(np.mean(nme)) if nme else float("nan")
        summary[f"count_yaw_{lo}_{hi}"] = len(nme)
        summary[f"missed_yaw_{lo}_{hi}"] = len(in_bin) - len(nme)
    scored_bins = [summary[f"nme_yaw_{lo}_{hi}"] for lo, hi in YAW_BINS if summary[f"count_yaw_{lo}_{hi}"]]
    summary["nme_mean_of_bins"] = float(np.mean(scored_bins)) if scored_bins else float("nan")
    summary["rows"] = rows
    return summary


def print_summary(s: dict, timed: bool = True) -> None:
    skipped = "".join(f", {n} {reason.replace('_', ' ')}" for reason, n in s["skipped"].items())
    print(f"images {s['images']}{skipped}  evaluated {s['evaluated']} (protocol dropped {s['protocol_dropped']})")
    print(f"missed {s['missed']} = {100 * s['miss_rate']:.1f}%  (of them beyond 60 deg yaw: "
          f"{s['missed_beyond_60deg_yaw']})")
    print(f"pose MAE deg: yaw {s['mae_yaw']:.2f}  pitch {s['mae_pitch']:.2f}  roll {s['mae_roll']:.2f}  "
          f"mean {s['mae_mean']:.2f}   (signed mean error: yaw {s['bias_yaw']:+.2f}  pitch {s['bias_pitch']:+.2f}  "
          f"roll {s['bias_roll']:+.2f})")
    print(f"  relative to the line of sight: yaw {s['mae_yaw_los']:.2f}  pitch {s['mae_pitch_los']:.2f}  "
          f"roll {s['mae_roll_los']:.2f}  mean {s['mae_mean_los']:.2f}   (signed mean error: yaw "
          f"{s['bias_yaw_los']:+.2f}  pitch {s['bias_pitch_los']:+.2f}  roll {s['bias_roll_los']:+.2f})")
    bins = "  ".join(f"{lo}-{hi}: {100 * s[f'nme_yaw_{lo}_{hi}']:.2f}% (n={s[f'count_yaw_{lo}_{hi}']}"
                     + (f", {s[f'missed_yaw_{lo}_{hi}']} missed" if s[f"missed_yaw_{lo}_{hi}"] else "") + ")"
                     for lo, hi in YAW_BINS)
    print(f"68-point NME by |yaw| (all labelled images): {bins}  mean {100 * s['nme_mean_of_bins']:.2f}%")
    if timed:
        print(f"time {1000 * s['seconds_per_image']:.1f} ms per image (whole pipeline, incl. decoding)")


def print_perturbed(perturbed: dict) -> None:
    print(f"perturbed: {perturbed['missed']} missed of {perturbed['cases']} "
          f"({100 * perturbed['missed'] / max(perturbed['cases'], 1):.1f}%); by zoom, then roll "
          + " ".join(f"{r:+d}" for r in PERTURB_ROLLS_DEG) + " deg:")
    for zoom, row in perturbed["misses_by_zoom_and_roll"].items():
        print(f"  zoom {zoom}: " + " ".join(f"{n:3d}" for n in row.values()))


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", type=Path, default=Path(__file__).resolve().parents[2] / "shared/data/aflw2000_prnet16")
    parser.add_argument("--detector-range", default=PipelineConfig().detector.detector_range,
                        choices=("short", "full", "both"), help="default: the pipeline's (%(default)s)")
    parser.add_argument("--no-iris-scale", action="store_true")
    parser.add_argument("--set", action="append", default=[], metavar="SECTION.NAME=VALUE",
                        help="override a pipeline setting, e.g. --set landmarks.mirror_average=false")
    parser.add_argument("--limit", type=int, default=0, help="evaluate only the first N images")
    parser.add_argument("--json", type=Path, help="write the summary and per-image rows here")
    parser.add_argument("--verbose", action="store_true", help="print every image's errors")
    parser.add_argument("--perturb", action="store_true",
                        help=f"also count misses with each image turned {PERTURB_ROLLS_DEG} deg and zoomed "
                             f"{PERTURB_ZOOMS}x about its centre")
    parser.add_argument("--reference", action="store_true",
                        help="also score MediaPipe's own face mesh on the same images (in its own venv, see "
                             "speed.py): with a plain PnP, and with our pose fit")
    args = parser.parse_args(argv)
    if not args.data.is_dir():
        print(f"no data folder {args.data}", file=sys.stderr)
        return 2
    overrides = {"tracking.enabled": False, "detector.detector_range": args.detector_range,
                 "pose.iris_scale": not args.no_iris_scale}
    for item in args.set:
        key, _, value = item.partition("=")
        overrides[key] = json.loads(value)
    config = PipelineConfig().updated(overrides).check()
    summary = evaluate(args.data, config, args.limit)
    if args.verbose:
        for row in summary["rows"]:
            print(row["image"], row["yaw_pitch_roll_true"], row.get("yaw_pitch_roll"), row.get("error"),
                  row.get("nme"))
    print_summary(summary)
    if args.perturb:
        summary["perturbed"] = perturbed_misses(args.data, config, args.limit)
        print_perturbed(summary["perturbed"])
    if args.reference:
        python, why = reference_python()
        if python is None:
            print(f"reference skipped: {why}")
        else:
            summary["reference"] = evaluate_reference(args.data, python, config, args.limit)
            for name, reference in summary["reference"].items():
                print(f"\n--- reference: {name}")
                print_summary(reference, timed=False)
            if args.perturb:
                summary["reference_perturbed"] = reference_perturbed_misses(args.data, python, args.limit)
                print("\n--- reference: MediaPipe face mesh (468), ", end="")
                print_perturbed(summary["reference_perturbed"])
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(json_safe(summary), indent=1, allow_nan=False))
    return 0


if __name__ == "__main__":
    sys.exit(main())
