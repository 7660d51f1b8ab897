"""Face mesh (468 points) and iris (5 + 5 points) landmark models on rotated ROI crops.

MediaPipe's face_landmark model takes a 192x192 RGB crop in [0, 1] and returns 468 (x, y, z) points in crop
pixels plus a face-presence logit; iris_landmark takes a 64x64 eye crop (the person's left eye mirrored, as
MediaPipe does) and returns 71 eye-contour and 5 iris points.
"""
from __future__ import annotations

import numpy as np

from .backends import OnnxModel
from .roi import (LEFT_EYE_INNER, LEFT_EYE_OUTER, RIGHT_EYE_INNER, RIGHT_EYE_OUTER, crop_into, crop_to_image,
                  eye_line_rotation)
from .types import Roi

FACE_INPUT, IRIS_INPUT = 192, 64
IRIS_ROI_SCALE = 2.3   # MediaPipe's eye crop: 2.3x the eye-corner distance
IRIS_POINTS = 5


def _batched(model: OnnxModel) -> bool:
    """Whether the model takes several crops in one call (a symbolic batch dimension)."""
    return not isinstance(model.input_shape[0], int) or model.input_shape[0] != 1


def _layout(batch: np.ndarray, model: OnnxModel) -> np.ndarray:
    if model.input_shape[1] == 3:  # NCHW model
        batch = batch.transpose(0, 3, 1, 2)
    return np.ascontiguousarray(batch)


class CropBatch:
    """A reused float32 (N, size, size, 3) input buffer: the crops are written straight into it (no per-crop
    arrays, no np.stack, no fresh half-megabyte allocation per image)."""

    def __init__(self, size: int):
        self.size = size
        self._buffer = np.empty((0, size, size, 3), np.float32)

    def fill(self, image: np.ndarray, rois, flips=None) -> tuple[np.ndarray, list[np.ndarray]]:
        n = len(rois)
        if self._buffer.shape[0] < n:
            self._buffer = np.empty((n, self.size, self.size, 3), np.float32)
        batch = self._buffer[:n]
        flips = flips or (False,) * n
        affines = [crop_into(image, roi, self.size, batch[i], flip) for i, (roi, flip) in enumerate(zip(rois, flips))]
        return batch, affines


def _run(model: OnnxModel, batch: np.ndarray) -> list[dict[str, np.ndarray]]:
    """Run the model on each crop of `batch`: one call for all when its batch is dynamic, else one call each."""
    if _batched(model):
        outputs = model(_layout(batch, model))
        return [{k: v[i] for k, v in outputs.items()} for i in range(len(batch))]
    return [model(_layout(batch[i:i + 1], model)) for i in range(len(batch))]


def _output_by_size(outputs: dict[str, np.ndarray], size: int) -> np.ndarray:
    return next(v for v in outputs.values() if v.size == size).reshape(-1)


class FaceLandmarker:
    """ROIs -> (468, 3) landmarks in image pixels and a face-presence score per ROI.

    With `mirror_average`, each crop also runs mirrored and the two results are averaged (the mirrored
    one re-indexed by `mirror`, the mesh's left-right map): this cancels part of the model's left-right
    bias, at one more inference per face.
    """

    def __init__(self, model: OnnxModel, mirror: np.ndarray | None = None):
        self.model = model
        self.mirror = mirror
        self._batch = CropBatch(FACE_INPUT)

    def __call__(self, image: np.ndarray, rois: list[Roi],
                 mirror_average: bool = False) -> list[tuple[np.ndarray, float]]:
        if not rois:
            return []
        n = len(rois)
        mirrored = mirror_average and self.mirror is not None
        all_rois = list(rois) * (2 if mirrored else 1)
        batch, affines = self._batch.fill(image, all_rois, [False] * n + [True] * n if mirrored else None)
        decoded = []
        for roi, affine, outputs in zip(all_rois, affines, _run(self.model, batch)):
            points = _output_by_size(outputs, 468 * 3).reshape(468, 3).astype(np.float64)
            logit = float(_output_by_size(outputs, 1)[0])
            decoded.append((crop_to_image(points, affine, FACE_INPUT, roi.size), logit))
        if mirrored:
            decoded = [(0.5 * (points + decoded[n + i][0][self.mirror]), 0.5 * (logit + decoded[n + i][1]))
                       for i, (points, logit) in enumerate(decoded[:n])]
        return [(points, 1.0 / (1.0 + np.exp(-np.clip(logit, -100, 100)))) for points, logit in decoded]


def eye_rois(landmarks_px: np.ndarray) -> tuple[Roi, Roi]:
    """The person's right and left eye crops from the mesh's eye corners (MediaPipe's iris ROI)."""
    def eye(start: int, end: int) -> Roi:
        a, b = landmarks_px[start, :2], landmarks_px[end, :2]
        return Roi(center=(a + b) / 2.0, size=float(np.max(np.abs(b - a))) * IRIS_ROI_SCALE,
                   rotation=eye_line_rotation(a, b))
    return eye(RIGHT_EYE_OUTER, RIGHT_EYE_INNER), eye(LEFT_EYE_INNER, LEFT_EYE_OUTER)


class IrisLandmarker:
    """Adds the 10 iris points (468-472 right iris, 473-477 left; centre first) to each face's mesh."""

    def __init__(self, model: OnnxModel):
        self.model = model
        self._batch = CropBatch(IRIS_INPUT)

    def __call__(self, image: np.ndarray, meshes: list[np.ndarray]) -> list[np.ndarray]:
        if not meshes:
            return []
        rois = [roi for mesh in meshes for roi in eye_rois(mesh)]
        batch, affines = self._batch.fill(image, rois, (False, True) * len(meshes))
        transforms = [(affine, roi.size) for affine, roi in zip(affines, rois)]
        outputs = _run(self.model, batch)
        refined = []
        for i, mesh in enumerate(meshes):
            irises = []
            for j in (2 * i, 2 * i + 1):
                iris = _output_by_size(outputs[j], IRIS_POINTS * 3).reshape(IRIS_POINTS, 3).astype(np.float64)
                affine, size = transforms[j]
                irises.append(crop_to_image(iris, affine, IRIS_INPUT, size))
            iris_points = np.vstack(irises)
            # The iris model's z is relative to the eye crop; anchor it at the eye corners' depth.
            corners = mesh[[RIGHT_EYE_OUTER, RIGHT_EYE_INNER, LEFT_EYE_INNER, LEFT_EYE_OUTER], 2]
            iris_points[:IRIS_POINTS, 2] += corners[:2].mean() - iris_points[0, 2]
            iris_points[IRIS_POINTS:, 2] += corners[2:].mean() - iris_points[IRIS_POINTS, 2]
            refined.append(np.vstack([mesh, iris_points]))
        return refined
