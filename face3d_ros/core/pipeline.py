"""The vision pipeline: image -> detections -> ROIs -> landmarks -> metric pose -> tracks.

With tracking on it works like MediaPipe's face mesh graph: the landmarks of one image give the crops of
the next, and the detector runs only to find new faces (every `detect_interval` images) or when a tracked
face is lost. With tracking off every image is processed on its own (detector every time, no smoothing).
"""
from __future__ import annotations

import dataclasses
import logging
import math
import time
from collections import defaultdict
from contextlib import contextmanager

import cv2
import numpy as np

from .backends import OnnxModel, provider_chain
from .config import PipelineConfig, sections
from .detector import SPECS, BlazeFaceModel, FaceDetector
from .geometry import (CANONICAL_OBJ, CANONICAL_WITH_IRIS_OBJ, MESH_WITH_IRIS_POINTS, PROCRUSTES_PBTXT,
                       HeadPoseSolver, mesh_mirror_indices)
from .landmarks import FaceLandmarker, IrisLandmarker
from .model_files import models_dir, verify_model_files
from .roi import (MESH_POINTS, box_area, box_inside_fraction, box_iou, landmark_box, roi_from_detection,
                  roi_from_landmarks, roi_iou)
from .smoothing import face_size_px
from .tracking import TRACKED, FaceTracker, box_center
from .types import CameraModel, Face, InputError

log = logging.getLogger("face3d_ros")

MIN_IMAGE_SIDE = 16
MAX_IMAGE_SIDE = 16384
DUPLICATE_IOU = 0.5   # two ROIs (or landmark boxes) overlapping more than this hold the same face
# a landmark box this much inside another is part of that face: when a face fills the image, a crop around
# one eye can score as a face of its own (IoU ~0.15 with the whole face's box)
NESTED_FRACTION = 0.7
# each detector model offers this many more faces than max_faces: the landmark model keeps the real ones, so
# a false detection larger than a real face does not take its place
EXTRA_CANDIDATES = 2
DEFAULT_FRAME_INTERVAL_NS = 33_333_333   # 30 Hz: assumed between images until their stamps show the interval
# the settings that may change at run time (config.py marks them dynamic); the others choose what is loaded
DYNAMIC_SETTINGS = frozenset(f"{name}.{f.name}" for name, section in sections(PipelineConfig())
                             for f in dataclasses.fields(section) if f.metadata["dynamic"])


# A tracked face's next crop is moved on by part of its last motion, only where that motion is more than
# landmark jitter: below MOTION_FROM (in face widths per image) not at all, the crop's margin takes it (moving
# crops by noise makes the landmarks noisier: static rotation jitter 0.42 -> 0.66 deg); fully from
# MOTION_FULL. MOTION_GAIN is half the motion: enough to follow a face swinging at a third of its width per
# image, and a crop sent the wrong way by an abrupt reversal is off by 1.5x the motion, not 2x.
MOTION_FROM, MOTION_FULL, MOTION_GAIN = 0.04, 0.08, 0.5


def predicted_shift(motion_px: np.ndarray, box: np.ndarray) -> np.ndarray:
    """How far to move a tracked face's next crop: MOTION_GAIN of its last motion, faded in between
    MOTION_FROM and MOTION_FULL face widths per image."""
    speed = math.hypot(float(motion_px[0]), float(motion_px[1])) / face_size_px(box)
    return MOTION_GAIN * motion_px * min(max((speed - MOTION_FROM) / (MOTION_FULL - MOTION_FROM), 0.0), 1.0)


def as_bgr(image: np.ndarray) -> np.ndarray:
    """Check an image and return it as 3-channel uint8 BGR; InputError says what is wrong."""
    if not isinstance(image, np.ndarray):
        raise InputError(f"image must be a numpy array, got {type(image).__name__}")
    if image.dtype != np.uint8:
        raise InputError(f"image must be uint8, got {image.dtype}")
    if image.ndim not in (2, 3) or (image.ndim == 3 and image.shape[2] not in (1, 3, 4)):
        raise InputError(f"image must be HxW (mono), HxWx3 (BGR) or HxWx4 (BGRA), got shape {image.shape}")
    h, w = image.shape[:2]
    if min(h, w) < MIN_IMAGE_SIDE or max(h, w) > MAX_IMAGE_SIDE:
        raise InputError(f"image size {w}x{h} is outside [{MIN_IMAGE_SIDE}, {MAX_IMAGE_SIDE}] pixels")
    if image.ndim == 2 or image.shape[2] == 1:
        return cv2.cvtColor(image, cv2.COLOR_GRAY2BGR)
    if image.shape[2] == 4:
        return cv2.cvtColor(image, cv2.COLOR_BGRA2BGR)
    return image


PLAIN_MESH_MODEL = "face_landmark.onnx"


def landmark_model_files(config: PipelineConfig) -> tuple[str, str | None]:
    """(face landmark model, iris model or None) that this configuration runs."""
    landmarks = config.landmarks
    if not landmarks.refine_iris:
        return PLAIN_MESH_MODEL, None
    if landmarks.iris_model == "attention":
        return "face_landmark_with_attention.onnx", None
    return PLAIN_MESH_MODEL, "iris_landmark.onnx"


def required_files(config: PipelineConfig) -> list[str]:
    """Every file of the models folder this configuration loads (to check them all up front); the plain mesh
    model is always one (with the attention model it verifies faces that model is unsure of)."""
    return ([spec.file for spec in SPECS[config.detector.detector_range]]
            + sorted({PLAIN_MESH_MODEL, *(name for name in landmark_model_files(config) if name)})
            + [CANONICAL_OBJ, CANONICAL_WITH_IRIS_OBJ, PROCRUSTES_PBTXT])


class TrackingClock:
    """The time tracking and smoothing run on: the images' stamps, except that an image stamped like the one
    before it (a camera driver that does not stamp, e.g. header.stamp left at 0) is put one frame interval
    later. At an equal stamp the filters would return their previous output (the same image twice), so the
    published landmarks and pose would freeze while the face moves.

    The frame interval is the last stamp advance divided by the images it spans (a driver stamping coarsely
    gives several images each stamp). A stamp that moves forward is its own time unless the interpolated time
    already ran past it: then it is one frame interval later, so the time never goes backwards (which would
    reset the tracking) while the stamps do not. Stamps going backwards: `reset()` first.
    """

    def __init__(self) -> None:
        self.reset()

    def reset(self) -> None:
        self.stamp_ns: int | None = None     # the last image's stamp
        self.time_ns = 0                      # and its time
        self.frame_interval_ns = DEFAULT_FRAME_INTERVAL_NS
        self._images_on_stamp = 0             # images seen with stamp_ns
        self._warned = False                  # once per stream, not per image

    def __call__(self, stamp_ns: int) -> int:
        """The time of the next image, stamped `stamp_ns` (never before the last image's stamp)."""
        if stamp_ns == self.stamp_ns:
            self._warn_once()
            self._images_on_stamp += 1
            self.time_ns += self.frame_interval_ns
            return self.time_ns
        if self.stamp_ns is None:
            self.time_ns = stamp_ns
        else:
            self.frame_interval_ns = max(1, (stamp_ns - self.stamp_ns) // self._images_on_stamp)
            self.time_ns = max(stamp_ns, self.time_ns + self.frame_interval_ns)
        self.stamp_ns, self._images_on_stamp = stamp_ns, 1
        return self.time_ns

    def _warn_once(self) -> None:
        if not self._warned:
            self._warned = True
            log.warning("image stamp %d ns equals the previous image's: the camera driver does not stamp its "
                        "images; tracking and smoothing use the frame interval (%.1f ms) instead",
                        self.stamp_ns, self.frame_interval_ns / 1e6)


class FacePipeline:
    """`FacePipeline(config).process(image_bgr, camera, stamp_ns) -> list[Face]`.

    One instance follows one camera stream (it keeps the ROIs and tracks of the previous image).
    """

    def __init__(self, config: PipelineConfig | None = None):
        self.config = (config or PipelineConfig()).check()
        folder = models_dir(self.config.backend.models_dir)
        # every file this configuration needs, checked once up front: all problems in one message
        verify_model_files(folder, required_files(self.config))
        chain = provider_chain(self.config.backend)
        if self.config.backend.threads:
            # process-wide: OpenCV's pool would run each small crop on 2+ threads whose workers then spin
            cv2.setNumThreads(self.config.backend.threads)

        def load(name: str) -> OnnxModel:
            return OnnxModel(folder / name, self.config.backend, chain)

        self.detector = FaceDetector([BlazeFaceModel(spec, load(spec.file))
                                      for spec in SPECS[self.config.detector.detector_range]])
        face_model, iris_model = landmark_model_files(self.config)
        attention = face_model != PLAIN_MESH_MODEL   # FaceLandmarker checks the model agrees (its metadata)
        self.landmarker = FaceLandmarker(
            load(face_model), mirror=mesh_mirror_indices(self.config.backend.models_dir,
                                                         MESH_WITH_IRIS_POINTS if attention else MESH_POINTS),
            verifier=load(PLAIN_MESH_MODEL) if attention else None)
        self.iris = IrisLandmarker(load(iris_model)) if iris_model else None
        self.solver = HeadPoseSolver(self.config.pose, models_dir=self.config.backend.models_dir)
        self.tracker = FaceTracker(self.config.tracking, self.config.smoothing)
        self.backend = self.landmarker.model.backend
        log.info("face3d pipeline: backend %s (%s), detector %s, models from %s", self.backend,
                 self.landmarker.model.active_provider, self.config.detector.detector_range, folder)
        self.frames = 0
        self.detector_runs = 0
        self.stage_ms: dict[str, float] = {}
        self._previous: list[Face] = []
        self._clock = TrackingClock()
        self._detect_next = True

    @property
    def models(self) -> list[OnnxModel]:
        found = [m.model for m in self.detector.models] + [self.landmarker.model]
        return found + [m for m in (self.landmarker.verifier, self.iris and self.iris.model) if m]

    def update_config(self, values: dict) -> None:
        """Change run-time settings ("section.name": value; config.py marks them dynamic); the models stay
        loaded. Nothing changes on an error: KeyError for an unknown name, ValueError for an invalid value or a
        setting fixed when the pipeline was built (e.g. which models run: build a new FacePipeline)."""
        config = self.config.updated(values).check()
        fixed = sorted(set(values) - DYNAMIC_SETTINGS)
        if fixed:
            raise ValueError(f"{', '.join(fixed)} cannot change at run time: the pipeline is built with them")
        for name in ("detector", "landmarks", "pose", "tracking", "smoothing"):
            section, new = getattr(self.config, name), getattr(config, name)
            section.__dict__.update(new.__dict__)  # in place: the solver and tracker hold these objects

    def reset(self) -> None:
        """Forget the previous images (a new stream; done by `process` itself when stamps go backwards)."""
        self._clock.reset()
        self._previous = []
        self._detect_next = True
        self.tracker.reset()

    @contextmanager
    def _stage(self, name: str):
        start = time.perf_counter()
        yield
        self.stage_ms[name] = self.stage_ms.get(name, 0.0) + (time.perf_counter() - start) * 1e3

    def process(self, image: np.ndarray, camera: CameraModel | None = None,
                stamp_ns: int | None = None) -> list[Face]:
        """Faces in `image` (uint8 BGR, BGRA or mono) seen by `camera` (default: see CameraModel.default_for),
        stamped `stamp_ns` (default: now). Stamps going backwards restart the tracking; an image stamped like
        the previous one is tracked one frame interval later (see TrackingClock)."""
        image = as_bgr(image)
        h, w = image.shape[:2]
        if camera is None:
            camera = CameraModel.default_for(w, h)
        elif not isinstance(camera, CameraModel):
            raise InputError(f"camera must be a CameraModel, got {type(camera).__name__}")
        if stamp_ns is None:
            stamp_ns = time.monotonic_ns()
        if self._clock.stamp_ns is not None and stamp_ns < self._clock.stamp_ns:
            self.reset()   # a new stream or a looping bag: the crops and tracks belong to other images
        time_ns = self._clock(stamp_ns)
        self.stage_ms = defaultdict(float)
        tracking = self.config.tracking.enabled

        faces = self._landmarks(image, tracking)
        with self._stage("pose"):
            faces = [face for face in faces if self._solve_pose(face, camera)]
        self._previous = faces
        self.frames += 1
        if not tracking:
            for face in faces:    # measured in this image (the default, tentative, would read as unconfirmed)
                face.track_state = TRACKED
            return faces
        with self._stage("tracking"):
            return self.tracker.update(faces, time_ns, max_faces=self.config.detector.max_faces)

    def _solve_pose(self, face: Face, camera: CameraModel) -> bool:
        """Fill in the metric pose; a tracked face starts from its previous pose. False: no valid fit."""
        try:
            pose = self.solver.solve(face.landmarks_px, camera, face.landmark_score,
                                     previous=face if face.has_pose else None)
        except InputError as err:  # degenerate landmarks: drop this face, keep the others
            log.debug("face dropped: %s", err)
            return False
        face.R_cam_face, face.t_cam_face = pose.R_cam_face, pose.t_cam_face
        face.vertices_cam, face.fit_rmse_px = pose.vertices_cam, pose.fit_rmse_px
        face.pose_confidence, face.depth_scale, face.iris_samples = pose.confidence, pose.depth_scale, pose.iris_samples
        return True

    def _landmarks(self, image: np.ndarray, tracking: bool) -> list[Face]:
        """Faces with landmarks: from the previous image's ROIs, plus the detector when it is due."""
        cfg = self.config
        tracked = [self._following(f) for f in self._previous] if tracking else []
        # As MediaPipe's graph: no search for new faces while max_faces are already tracked.
        due = (not tracking or self._detect_next or not tracked
               or (self.frames % cfg.tracking.detect_interval == 0 and len(tracked) < cfg.detector.max_faces))
        models = self._search_models(tracking, tracked) if due else []
        detected = self._detect(image, models) if models else []
        # with both detector models a face may come once per model: the landmark model's score keeps the
        # better crop (_drop_duplicates). Tracking: tracked faces first, new ones fill what room is left, but
        # only once the landmark model has kept them (a false detection must not take the room of a real face)
        candidates = tracked + self._new_faces(tracked, detected)
        single_pass_mirror = not tracking and not cfg.landmarks.second_pass and cfg.landmarks.mirror_average
        last_centres = {id(face): box_center(face.bbox) for face in tracked}
        faces = self._drop_duplicates(self._run_landmarks(image, candidates, single_pass_mirror))
        for face in faces:
            if id(face) in last_centres:
                face.motion_px = np.subtract(box_center(face.bbox), last_centres[id(face)])
        if tracking and not due and len(faces) < len(tracked):
            # a tracked face was lost: look for faces again in this same image rather than the next one
            fresh = self._new_faces(faces, self._detect(image, self.detector.models))
            faces = self._drop_duplicates(faces + self._run_landmarks(image, fresh))
        self._detect_next = tracking and len(faces) < len(tracked)
        if not tracking:    # the largest max_faces, as the detector ranks them
            faces = sorted(faces, key=lambda f: -box_area(f.bbox))[:cfg.detector.max_faces]
        if not tracking and cfg.landmarks.second_pass and faces:
            # what tracking does across images, done within one: the landmarks give a better-aligned crop
            refined = [self._following(f) for f in faces]
            faces = self._drop_duplicates(self._run_landmarks(image, refined, cfg.landmarks.mirror_average))
        if tracking:   # tracked faces (the keys of last_centres) first; stable: by score within each group
            faces.sort(key=lambda face: id(face) not in last_centres)
        faces = faces[:cfg.detector.max_faces]
        if self.iris and faces:
            with self._stage("iris"):
                for face, refined in zip(faces, self.iris(image, [f.landmarks_px for f in faces])):
                    face.landmarks_px = refined
        return faces

    def _following(self, face: Face) -> Face:
        """A new candidate whose crop follows `face`'s landmarks, moved on by the face's last motion (a face
        moving a third of its width per image would leave a crop that stays behind), carrying its pose (if
        any) as the starting guess of the next fit."""
        roi = roi_from_landmarks(face.landmarks_px, face.bbox, self.config.landmarks.roi_scale)
        if face.motion_px is not None:
            roi.center = roi.center + predicted_shift(face.motion_px, face.bbox)
        return Face(bbox=face.bbox, detection_score=face.detection_score, roi=roi,
                    R_cam_face=face.R_cam_face, t_cam_face=face.t_cam_face, depth_scale=face.depth_scale,
                    iris_samples=face.iris_samples)

    def _search_models(self, tracking: bool, tracked: list[Face]) -> list:
        """The detector models that search this image: all, except while tracking with no face in view, when
        the scene is searched every image: then they take turns, one model per image (an empty scene costs
        one model, and a face only the other model sees is found one image later)."""
        models = self.detector.models
        if tracking and not tracked and len(models) > 1:
            return [models[self.frames % len(models)]]
        return models

    def _detect(self, image: np.ndarray, models: list) -> list[Face]:
        cfg = self.config
        with self._stage("detect"):
            detections = self.detector(image, cfg.detector.min_detection_score, cfg.detector.nms_iou,
                                       cfg.detector.max_faces + EXTRA_CANDIDATES, models)
        self.detector_runs += 1
        return [Face(bbox=d.bbox, detection_score=d.score, roi=roi_from_detection(d, cfg.landmarks.roi_scale))
                for d in detections]

    @staticmethod
    def _new_faces(known: list[Face], detected: list[Face]) -> list[Face]:
        """Detections overlapping no known face (a tracked ROI beats a detection, as in MediaPipe)."""
        return [d for d in detected if all(roi_iou(d.roi, k.roi) <= DUPLICATE_IOU for k in known)]

    def _run_landmarks(self, image: np.ndarray, candidates: list[Face], mirror_average: bool = False) -> list[Face]:
        cfg = self.config
        with self._stage("landmarks"):
            results = self.landmarker(image, [c.roi for c in candidates], mirror_average,
                                      min_score=cfg.landmarks.min_landmark_score)
        faces = []
        for candidate, (points, score) in zip(candidates, results):
            if score >= cfg.landmarks.min_landmark_score:
                candidate.landmarks_px, candidate.landmark_score = points, score
                candidate.bbox = landmark_box(points)
                faces.append(candidate)
        return faces

    @staticmethod
    def _drop_duplicates(faces: list[Face]) -> list[Face]:
        """Two crops that converged on one face, or one holding a part of another's face: keep the more
        confident (of two equally confident, the larger)."""
        kept: list[Face] = []
        for face in sorted(faces, key=lambda f: (-f.landmark_score, -box_area(f.bbox))):
            others = np.array([k.bbox for k in kept]) if kept else None
            if others is None or (box_iou(face.bbox[None], others).max() <= DUPLICATE_IOU
                                  and box_inside_fraction(face.bbox[None], others).max() <= NESTED_FRACTION):
                kept.append(face)
        return kept

    @property
    def inference_ms(self) -> float:
        """Total time spent inside onnxruntime so far (all models)."""
        return sum(m.inference_s for m in self.models) * 1e3
