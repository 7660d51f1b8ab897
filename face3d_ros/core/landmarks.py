"""Face mesh (468 points) and iris (5 + 5 points) landmark models on rotated ROI crops.

MediaPipe's face_landmark model takes a 192x192 RGB crop in [0, 1] and returns 468 (x, y, z) points in crop
pixels plus a face-presence logit; iris_landmark takes a 64x64 eye crop (the person's left eye mirrored, as
MediaPipe does) and returns 71 eye-contour and 5 iris points.
"""
from __future__ import annotations

import numpy as np

from .backends import OnnxModel
from .roi import (LEFT_EYE_INNER, LEFT_EYE_OUTER, RIGHT_EYE_INNER, RIGHT_EYE_OUTER, crop, crop_to_image,
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


def _run(model: OnnxModel, crops: list[np.ndarray]) -> list[dict[str, np.ndarray]]:
    """Run the model on each crop: one call for all when its batch is dynamic, else one call each."""
    if _batched(model):
        outputs = model(_layout(np.stack(crops), model))
        return [{k: v[i] for k, v in outputs.items()} for i in range(len(crops))]
    return [model(_layout(c[None], model)) for c in crops]


def _output_by_size(outputs: dict[str, np.ndarray], size: int) -> np.ndarray:
    return next(v for v in outputs.values() if v.size == size).reshape(-1)


class FaceLandmarker:
    """ROIs -> (468, 3) landmarks in image pixels and a face-presence score per ROI."""

    def __init__(self, model: OnnxModel):
        self.model = model

    def __call__(self, image: np.ndarray, rois: list[Roi]) -> list[tuple[np.ndarray, float]]:
        if not rois:
            return []
        crops, affines = zip(*(crop(image, roi, FACE_INPUT) for roi in rois))
        results = []
        for roi, affine, outputs in zip(rois, affines, _run(self.model, list(crops))):
            points = _output_by_size(outputs, 468 * 3).reshape(468, 3).astype(np.float64)
            logit = float(_output_by_size(outputs, 1)[0])
            score = 1.0 / (1.0 + np.exp(-np.clip(logit, -100, 100)))
            results.append((crop_to_image(points, affine, FACE_INPUT, roi.size), score))
        return results


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

    def __call__(self, image: np.ndarray, meshes: list[np.ndarray]) -> list[np.ndarray]:
        if not meshes:
            return []
        crops, transforms = [], []
        for mesh in meshes:
            for roi, mirrored in zip(eye_rois(mesh), (False, True)):
                patch, affine = crop(image, roi, IRIS_INPUT, flip=mirrored)
                crops.append(patch)
                transforms.append((affine, roi.size))
        outputs = _run(self.model, crops)
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
