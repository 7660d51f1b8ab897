"""face3d-estimate: faces, 3D mesh and metric head pose for an image, a folder of images or a video.

    face3d-estimate photo.jpg --json faces.jsonl --annotate out/
    face3d-estimate clip.mp4 --camera-info camera.yaml --annotate out/ --obj meshes/

Without intrinsics the camera is a pinhole with fx = fy = image width, centred (~53 deg horizontal FOV).
"""
from __future__ import annotations

import argparse
import json
import logging
import math
import sys
from collections import Counter
from pathlib import Path

import cv2
import numpy as np

from . import geometry
from .config import BACKENDS, DETECTOR_RANGES, DetectorConfig, PipelineConfig
from .draw import draw_faces
from .pipeline import FacePipeline
from .types import CameraModel, Face, InputError

IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff", ".webp"}
# containers can report 0, NaN or a time base (90000) as the frame rate
MIN_FPS, MAX_FPS, FALLBACK_FPS = 0.1, 1000.0, 30.0


def load_camera_yaml(path: Path) -> CameraModel:
    """A CameraInfo-style YAML (camera_calibration / camera_info_manager format)."""
    import yaml  # safe_load only: never construct arbitrary objects from a file
    try:
        data = yaml.safe_load(path.read_text())
    except OSError as err:
        raise InputError(f"cannot read --camera-info {path}: {err.strerror or err}") from err
    except yaml.YAMLError as err:
        raise InputError(f"{path}: not a CameraInfo YAML (not valid YAML)") from err
    try:
        return CameraModel(K=np.array(data["camera_matrix"]["data"], float).reshape(3, 3),
                           D=np.array(data.get("distortion_coefficients", {}).get("data", []), float),
                           distortion_model=data.get("distortion_model", "plumb_bob"),
                           width=int(data.get("image_width", 0)), height=int(data.get("image_height", 0)))
    except (KeyError, TypeError, ValueError, AttributeError) as err:
        raise InputError(f"{path}: not a CameraInfo YAML ({err})") from err


def argument_problem(args) -> str | None:
    """Why these arguments cannot run (one line for the user), or None."""
    if not args.input.exists():
        return f"no such file or folder: {args.input}"
    given = [name for name in ("fx", "fy", "cx", "cy") if getattr(args, name) is not None]
    if given and args.camera_info:
        return "--camera-info and --fx/--fy/--cx/--cy both give the camera: pick one"
    if given and args.fx is None:
        return "--fy, --cx and --cy need --fx"
    for name in given:
        value, focal = getattr(args, name), name in ("fx", "fy")
        if not math.isfinite(value) or (focal and value <= 0):
            return f"--{name} must be a finite number{' > 0' if focal else ''}, got {value:g}"
    return None


def camera_for(args, calibrated: CameraModel | None, width: int, height: int) -> CameraModel:
    """The camera of one image. InputError where the calibration is for another image size: its poses would
    be garbage (the node skips such images too)."""
    if calibrated is not None:
        if not calibrated.fits(width, height):
            raise InputError(f"--camera-info is for {calibrated.width}x{calibrated.height} images but the image "
                             f"is {width}x{height}")
        return calibrated
    if args.fx is not None:
        return CameraModel.from_focal(width, height, args.fx, args.fy, args.cx, args.cy)
    return CameraModel.default_for(width, height)


def face_record(face: Face) -> dict:
    """One face as JSON: the conventions are the README's (pixels, metres, REP-155 face frame)."""
    record = {"id": face.track_id or None, "bbox": np.round(face.bbox, 2).tolist(),
              "score": round(face.detection_score, 4), "landmark_score": round(face.landmark_score, 4),
              "landmarks_2d": np.round(face.landmarks_px[:, :2], 2).tolist(),
              "landmarks_68": np.round(geometry.landmarks_68(face.landmarks_px), 2).tolist()}
    if face.has_pose:
        record.update({"R_cam_face": np.round(face.R_cam_face, 6).tolist(),
                       "t_cam_face": np.round(face.t_cam_face, 5).tolist(),
                       "quaternion_xyzw": np.round(geometry.quaternion_xyzw(face.R_cam_face), 6).tolist(),
                       "yaw_pitch_roll_deg": np.round(geometry.yaw_pitch_roll_deg(face.R_cam_face), 3).tolist(),
                       "fit_rmse_px": round(float(face.fit_rmse_px), 3), "depth_scale": round(face.depth_scale, 4)})
    return record


def write_obj(path: Path, vertices: np.ndarray, triangles: np.ndarray) -> None:
    lines = ["# face3d_ros mesh: metres, camera optical frame (x right, y down, z forward)"]
    lines += [f"v {x:.6f} {y:.6f} {z:.6f}" for x, y, z in vertices]
    lines += [f"f {a + 1} {b + 1} {c + 1}" for a, b, c in triangles]
    path.write_text("\n".join(lines) + "\n")


def video_fps(source: Path) -> float:
    """The video's frame rate, or FALLBACK_FPS where its container reports none that makes sense."""
    video = cv2.VideoCapture(str(source))
    fps = video.get(cv2.CAP_PROP_FPS)
    video.release()
    return fps if MIN_FPS <= fps <= MAX_FPS else FALLBACK_FPS


def output_names(paths: list[Path]) -> list[str]:
    """The stem of each file, with its extension where two share a stem (a.jpg and a.png would otherwise both
    write a_face0.obj and a_annotated.jpg)."""
    shared = {stem for stem, n in Counter(p.stem for p in paths).items() if n > 1}
    names, taken = [], set()
    for path in paths:
        name = f"{path.stem}_{path.suffix[1:]}" if path.stem in shared else path.stem
        unique, k = name, 2
        while unique in taken:      # a.png -> a_png, and a_png.jpg -> a_png too
            unique, k = f"{name}_{k}", k + 1
        names.append(unique)
        taken.add(unique)
    return names


def frames(source: Path, fps: float = FALLBACK_FPS):
    """(name, key, image, stamp_ns) for an image, a folder of images, or a video (stamped at `fps`)."""
    if source.is_dir():
        paths = sorted(p for p in source.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES and p.is_file())
        for name, path in zip(output_names(paths), paths):
            yield name, {"image": str(path)}, cv2.imread(str(path), cv2.IMREAD_COLOR), None
    elif source.suffix.lower() in IMAGE_SUFFIXES:
        yield source.stem, {"image": str(source)}, cv2.imread(str(source), cv2.IMREAD_COLOR), None
    else:
        video = cv2.VideoCapture(str(source))
        if not video.isOpened():
            raise InputError(f"cannot open {source} as an image, a folder or a video")
        index = 0
        while True:
            ok, image = video.read()
            if not ok:
                break
            yield f"{source.stem}_{index:06d}", {"frame": index}, image, int(index * 1e9 / fps)
            index += 1
        video.release()


def describe(source: Path, key: dict) -> str:
    """An image's path, or a video's frame, for messages."""
    return key["image"] if "image" in key else f"{source} frame {key['frame']}"


def parse_args(argv=None):
    parser = argparse.ArgumentParser(prog="face3d-estimate", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("input", type=Path, help="an image, a folder of images, or a video")
    parser.add_argument("--json", type=Path, help="write one JSON line per image or frame")
    parser.add_argument("--annotate", type=Path, help="folder for annotated images (or the annotated video)")
    parser.add_argument("--obj", type=Path, help="folder for one OBJ mesh per face per image")
    cam = parser.add_argument_group("camera (default: fx = fy = image width, centred)")
    cam.add_argument("--camera-info", help="CameraInfo-style YAML with camera_matrix and distortion; images of "
                     "another size than its image_width x image_height (when not 0) are skipped")
    cam.add_argument("--fx", type=float, help="focal length in pixels, instead of --camera-info")
    cam.add_argument("--fy", type=float, help="default: fx")
    cam.add_argument("--cx", type=float, help="default: the image centre")
    cam.add_argument("--cy", type=float, help="default: the image centre")
    parser.add_argument("--backend", choices=BACKENDS, default="auto")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--detector-range", choices=DETECTOR_RANGES, default=DetectorConfig().detector_range)
    parser.add_argument("--max-faces", type=int, default=10)
    parser.add_argument("--no-smoothing", action="store_true", help="video: keep per-frame poses")
    return parser.parse_args(argv)


def tell(message: str) -> int:
    """One line for the user on stderr; returns 2, the exit status for bad arguments or input."""
    print(f"face3d-estimate: {message}", file=sys.stderr)
    return 2


def main(argv=None) -> int:
    args = parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    problem = argument_problem(args)
    if problem:
        return tell(problem)
    try:
        calibrated = load_camera_yaml(Path(args.camera_info)) if args.camera_info else None
    except InputError as err:
        return tell(str(err))
    is_video = not (args.input.is_dir() or args.input.suffix.lower() in IMAGE_SUFFIXES)
    config = PipelineConfig().updated({"backend.backend": args.backend, "backend.threads": args.threads,
                                       "detector.detector_range": args.detector_range,
                                       "detector.max_faces": args.max_faces,
                                       "tracking.enabled": is_video,
                                       # faces from a video's first frame on (the default, 2, holds a new
                                       # track back one image against one-off false detections)
                                       "tracking.min_hits": 1,
                                       "smoothing.enabled": not args.no_smoothing})
    try:
        pipeline = FacePipeline(config)
    except ValueError as err:
        return tell(str(err))
    triangles = geometry.load_canonical_face().triangles
    for folder in (args.annotate, args.obj, args.json and args.json.parent):
        if folder:
            folder.mkdir(parents=True, exist_ok=True)
    fps = video_fps(args.input) if is_video else FALLBACK_FPS
    out = open(args.json, "w") if args.json else None
    writer = None
    count = skipped = 0
    try:
        for name, key, image, stamp_ns in frames(args.input, fps):
            if image is None:
                tell(f"cannot read image {key['image']}")
                skipped += 1
                continue
            try:
                camera = camera_for(args, calibrated, image.shape[1], image.shape[0])
                faces = pipeline.process(image, camera, stamp_ns)
            except InputError as err:   # this image only: the others may be fine
                tell(f"skipped {describe(args.input, key)}: {err}")
                skipped += 1
                continue
            count += 1
            if out:
                out.write(json.dumps({**key, "faces": [face_record(f) for f in faces]}) + "\n")
            if args.obj:
                for i, face in enumerate(faces):
                    write_obj(args.obj / f"{name}_face{face.track_id or i}.obj", face.vertices_cam,
                              triangles)
            if args.annotate:
                picture = draw_faces(image, faces, camera, triangles)
                if is_video:
                    if writer is None:
                        path = args.annotate / f"{args.input.stem}_annotated.mp4"
                        writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"mp4v"), fps,
                                                 (image.shape[1], image.shape[0]))
                    writer.write(picture)
                else:
                    cv2.imwrite(str(args.annotate / f"{name}_annotated.jpg"), picture)
            print(f"{name}: {len(faces)} face(s)" + "".join(
                f"  [{f.track_id or i}] yaw/pitch/roll {np.round(geometry.yaw_pitch_roll_deg(f.R_cam_face), 1)}"
                f" deg, t {np.round(f.t_cam_face, 3)} m" for i, f in enumerate(faces) if f.has_pose))
    except InputError as err:   # the source itself (not a video after all)
        return tell(str(err))
    finally:
        if out:
            out.close()
        if writer is not None:
            writer.release()
    if count == 0 and skipped:
        return tell(f"no image processed in {args.input} ({skipped} skipped)")
    if count == 0:
        print(f"face3d-estimate: no image found in {args.input}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
