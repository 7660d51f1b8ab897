"""Face mesh (468 or 478 points) and iris (5 + 5 points) landmark models on rotated ROI crops.

MediaPipe's face_landmark model takes a 192x192 RGB crop in [0, 1] and returns 468 (x, y, z) points in crop
pixels plus a face-presence logit. face_landmark_with_attention (MediaPipe's refine_landmarks=True model)
takes the same crop and also returns refined lips, eyes and irises: 478 points in one pass. iris_landmark
takes a 64x64 eye crop (the person's left eye mirrored, as MediaPipe does) and returns 71 eye-contour and 5
iris points.
"""
from __future__ import annotations

import json
import math

import numpy as np

from .backends import OnnxModel
from .roi import (LEFT_EYE_INNER, LEFT_EYE_OUTER, MESH_POINTS, RIGHT_EYE_INNER, RIGHT_EYE_OUTER, crop_into,
                  crop_to_image, eye_line_rotation)
from .types import Roi

FACE_INPUT, IRIS_INPUT = 192, 64
IRIS_ROI_SCALE = 2.3   # MediaPipe's eye crop: 2.3x the eye-corner distance
IRIS_POINTS = 5
MIRRORED_IRIS_ORDER = [0, 3, 2, 1, 4]   # centre, then the contour with its two horizontal edges swapped


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


# Metadata key (JSON) of face_landmark_with_attention.onnx: the mesh indices each refined region replaces,
# {"lips": [80], "left_eye": [71], "right_eye": [71]} (written by models/build_models.py)
REFINEMENT_METADATA_KEY = "face3d.refinement"
REFINED_REGIONS = {"lips": 80, "left_eye": 71, "right_eye": 71}
EYE_CONTOUR_POINTS = 16    # an eye region starts with its 9 lower and 7 upper eyelid points
IRISES = ((MESH_POINTS, "left_iris", "left_eye"), (MESH_POINTS + IRIS_POINTS, "right_iris", "right_eye"))


def refinement_indices(model: OnnxModel) -> dict[str, np.ndarray] | None:
    """The refined regions' mesh indices from the model's metadata; None for a plain 468-point model."""
    meta = model.session.get_modelmeta().custom_metadata_map.get(REFINEMENT_METADATA_KEY)
    if meta is None:
        return None
    regions = {name: np.asarray(indices, dtype=np.intp) for name, indices in json.loads(meta).items()}
    if ({name: len(idx) for name, idx in regions.items()} != REFINED_REGIONS
            or any(idx.min() < 0 or idx.max() >= MESH_POINTS for idx in regions.values())):
        raise ValueError(f"{model.path.name}: unexpected {REFINEMENT_METADATA_KEY} metadata")
    return regions


class MeshRefinement:
    """face_landmark_with_attention's outputs for one crop -> (478, 3) crop points, as MediaPipe's
    LandmarksRefinementCalculator: the lips and eye regions (x, y) replace the mesh's, which keeps its z; each
    iris (x, y) takes the mean mesh z of its eye's contour.

    The whole mapping is one gather index over the outputs laid end to end (plus the two eyes' mean depths),
    built once per model: decoding a crop is then a handful of numpy calls instead of one per region."""

    SOURCES = ("landmarks", "lips", "left_eye", "right_eye", "left_iris", "right_iris")

    def __init__(self, regions: dict[str, np.ndarray]):
        sizes = {"landmarks": 3 * MESH_POINTS, "left_iris": 2 * IRIS_POINTS, "right_iris": 2 * IRIS_POINTS,
                 **{name: 2 * len(indices) for name, indices in regions.items()}}
        starts = dict(zip(self.SOURCES, np.cumsum([0] + [sizes[name] for name in self.SOURCES]).tolist()))
        eye_depths = sum(sizes.values())        # where the two mean eye depths go, after the outputs
        index = np.empty((MESH_POINTS + 2 * IRIS_POINTS, 3), np.intp)
        index[:MESH_POINTS] = np.arange(3 * MESH_POINTS).reshape(MESH_POINTS, 3)
        for name, indices in regions.items():
            index[indices, :2] = starts[name] + np.arange(2 * len(indices)).reshape(-1, 2)
        for k, (first, iris, _) in enumerate(IRISES):
            index[first:first + IRIS_POINTS, :2] = starts[iris] + np.arange(2 * IRIS_POINTS).reshape(-1, 2)
            index[first:first + IRIS_POINTS, 2] = eye_depths + k
        self._index = index
        # flat indices of the mesh z of each eye's contour, and the weights that average them
        self._contour_z = np.stack([3 * regions[eye][:EYE_CONTOUR_POINTS] + 2 for _, _, eye in IRISES])
        self._mean = np.full(EYE_CONTOUR_POINTS, 1.0 / EYE_CONTOUR_POINTS)

    def __call__(self, outputs: dict[str, np.ndarray]) -> np.ndarray:
        mesh = outputs["landmarks"].reshape(-1)
        eye_depths = mesh[self._contour_z] @ self._mean
        flat = np.concatenate([mesh, *(outputs[name].reshape(-1) for name in self.SOURCES[1:]), eye_depths],
                              dtype=np.float64)
        return flat[self._index]


class FaceLandmarker:
    """ROIs -> (468, 3) landmarks in image pixels (478 with an attention model: refined lips, eyes and
    irises) and a face-presence score per ROI.

    With `mirror_average`, each crop also runs mirrored and the two results are averaged (the mirrored
    one re-indexed by `mirror`, the mesh's left-right map): this cancels part of the model's left-right
    bias, at one more inference per face.

    `verifier` (the plain 468-point model, beside an attention model): the attention model's face flag is
    far less sure of small, blurry faces (a 35 px face: 0.02 where the plain model says 0.71), so a crop
    it scores below `min_score` is scored again by the verifier, whose score then stands.
    """

    def __init__(self, model: OnnxModel, mirror: np.ndarray | None = None, verifier: OnnxModel | None = None):
        self.model = model
        self.verifier = verifier
        self.regions = refinement_indices(model)
        self.refinement = MeshRefinement(self.regions) if self.regions is not None else None
        self.points = MESH_POINTS + (2 * IRIS_POINTS if self.regions is not None else 0)
        if mirror is not None and len(mirror) != self.points:
            raise ValueError(f"mirror map has {len(mirror)} points, the model gives {self.points}")
        self.mirror = mirror
        self._batch = CropBatch(FACE_INPUT)

    def __call__(self, image: np.ndarray, rois: list[Roi], mirror_average: bool = False,
                 min_score: float = 0.0) -> list[tuple[np.ndarray, float]]:
        if not rois:
            return []
        n = len(rois)
        mirrored = mirror_average and self.mirror is not None
        all_rois = list(rois) * (2 if mirrored else 1)
        batch, affines = self._batch.fill(image, all_rois, [False] * n + [True] * n if mirrored else None)
        decoded = []
        for roi, affine, outputs in zip(all_rois, affines, _run(self.model, batch)):
            if self.refinement is None:
                points = _output_by_size(outputs, MESH_POINTS * 3).reshape(MESH_POINTS, 3).astype(np.float64)
            else:
                points = self.refinement(outputs)
            logit = float(_output_by_size(outputs, 1)[0])
            decoded.append((crop_to_image(points, affine, FACE_INPUT, roi.size), logit))
        if mirrored:
            decoded = [(0.5 * (points + decoded[n + i][0][self.mirror]), 0.5 * (logit + decoded[n + i][1]))
                       for i, (points, logit) in enumerate(decoded[:n])]
        results = [(points, _sigmoid(logit)) for points, logit in decoded]
        doubtful = [i for i, (_, score) in enumerate(results) if score < min_score]
        if self.verifier is not None and doubtful:
            for i, outputs in zip(doubtful, _run(self.verifier, batch[doubtful])):
                results[i] = (results[i][0], _sigmoid(float(_output_by_size(outputs, 1)[0])))
        return results


def _sigmoid(logit: float) -> float:
    return 1.0 / (1.0 + math.exp(-min(max(logit, -100.0), 100.0)))


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
                if j % 2:   # the mirrored eye's two horizontal edge points come back swapped: restore the
                    iris = iris[MIRRORED_IRIS_ORDER]   # canonical face's (and the attention model's) order
                affine, size = transforms[j]
                irises.append(crop_to_image(iris, affine, IRIS_INPUT, size))
            iris_points = np.vstack(irises)
            # The iris model's z is relative to the eye crop; anchor it at the eye corners' depth.
            corners = mesh[[RIGHT_EYE_OUTER, RIGHT_EYE_INNER, LEFT_EYE_INNER, LEFT_EYE_OUTER], 2]
            iris_points[:IRIS_POINTS, 2] += corners[:2].mean() - iris_points[0, 2]
            iris_points[IRIS_POINTS:, 2] += corners[2:].mean() - iris_points[IRIS_POINTS, 2]
            refined.append(np.vstack([mesh, iris_points]))
        return refined
