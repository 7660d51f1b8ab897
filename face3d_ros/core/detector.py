"""BlazeFace face detection (MediaPipe's short- and full-range models): image -> [Detection].

Anchors, box decoding and weighted NMS follow MediaPipe's face_detection_*_range graphs
(SsdAnchorsCalculator, TensorsToDetectionsCalculator, NonMaxSuppressionCalculator WEIGHTED).
"""
from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

from .backends import OnnxModel
from .roi import box_area, box_iou
from .types import Detection


@dataclass(frozen=True)
class DetectorSpec:
    file: str
    input_size: int
    strides: tuple[int, ...]
    anchors_per_cell: tuple[int, ...]   # per stride, after MediaPipe merges layers of equal stride


SHORT_RANGE = DetectorSpec("face_detection_short_range.onnx", 128, (8, 16), (2, 6))
FULL_RANGE = DetectorSpec("face_detection_full_range.onnx", 192, (4,), (1,))
SPECS = {"short": (SHORT_RANGE,), "full": (FULL_RANGE,), "both": (FULL_RANGE, SHORT_RANGE)}

NUM_KEYPOINTS = 6
SCORE_CLIP = 100.0  # MediaPipe clips the logits before the sigmoid


def make_anchors(spec: DetectorSpec) -> np.ndarray:
    """(A, 2) anchor centres in [0, 1]; every anchor has unit size (fixed_anchor_size)."""
    centres = []
    for stride, per_cell in zip(spec.strides, spec.anchors_per_cell):
        cells = int(np.ceil(spec.input_size / stride))
        ys, xs = np.meshgrid(np.arange(cells), np.arange(cells), indexing="ij")
        grid = np.stack([(xs + 0.5) / cells, (ys + 0.5) / cells], axis=-1).reshape(-1, 1, 2)
        centres.append(np.repeat(grid, per_cell, axis=1).reshape(-1, 2))
    return np.concatenate(centres).astype(np.float32)


class Pyramid:
    """An image and its Gaussian-pyramid halvings, each made once, when first asked for: the detector models
    downscale the same image, and they share the halvings (the first of a 640x480 image takes ~0.2 ms)."""

    def __init__(self, image: np.ndarray):
        self.levels = [image]

    @property
    def shape(self) -> tuple[int, ...]:
        return self.levels[0].shape

    def halved_until(self, size: tuple[int, int]) -> np.ndarray:
        """The first level not over twice `size` (w, h): with a bilinear resize after, an anti-aliased
        downscale at a tenth of INTER_AREA's cost (0.17 vs 1-1.5 ms for 640x480 -> 192)."""
        level = 0
        while self.levels[level].shape[1] >= 2 * size[0] and self.levels[level].shape[0] >= 2 * size[1]:
            level += 1
            if level == len(self.levels):
                self.levels.append(cv2.pyrDown(self.levels[-1]))
        return self.levels[level]


def letterbox(pyramid: Pyramid, size: int) -> tuple[np.ndarray, float, np.ndarray]:
    """Resize the pyramid's image keeping the aspect ratio and pad to size x size (as MediaPipe's FIT mode).

    Returns the padded RGB image in [-1, 1], the scale (model px per image px) and the padding offset.
    """
    h, w = pyramid.shape[:2]
    scale = size / max(h, w)
    new_w, new_h = max(1, round(w * scale)), max(1, round(h * scale))
    resized = cv2.resize(pyramid.halved_until((new_w, new_h)), (new_w, new_h), interpolation=cv2.INTER_LINEAR)
    offset = np.array([(size - new_w) // 2, (size - new_h) // 2])
    canvas = np.zeros((size, size, 3), np.uint8)
    canvas[offset[1]:offset[1] + new_h, offset[0]:offset[0] + new_w] = resized
    tensor = np.multiply(cv2.cvtColor(canvas, cv2.COLOR_BGR2RGB), np.float32(2.0 / 255.0), dtype=np.float32)
    return np.subtract(tensor, np.float32(1.0), out=tensor), scale, offset


def to_model_layout(tensor: np.ndarray, input_shape: tuple) -> np.ndarray:
    """Add the batch axis; transpose HWC -> CHW when the model takes NCHW."""
    if len(input_shape) == 4 and input_shape[1] == 3:
        tensor = tensor.transpose(2, 0, 1)
    return np.ascontiguousarray(tensor[None])


def weighted_nms(scores: np.ndarray, boxes: np.ndarray, keypoints: np.ndarray,
                 iou_threshold: float) -> list[Detection]:
    """MediaPipe's weighted NMS: overlapping boxes are averaged, weighted by score; the top score is kept."""
    order = np.argsort(-scores)
    scores, boxes, keypoints = scores[order], boxes[order], keypoints[order]
    remaining = np.ones(len(scores), bool)
    detections = []
    for i in range(len(scores)):
        if not remaining[i]:
            continue
        group = remaining & (box_iou(boxes[i:i + 1], boxes)[0] > iou_threshold)
        group[i] = True
        remaining &= ~group
        weights = scores[group] / scores[group].sum()
        detections.append(Detection(score=float(scores[i]),
                                    bbox=(weights[:, None] * boxes[group]).sum(0),
                                    keypoints=(weights[:, None, None] * keypoints[group]).sum(0)))
    return detections


class BlazeFaceModel:
    """One BlazeFace model: letterboxed image in, boxes and keypoints in image pixels out."""

    def __init__(self, spec: DetectorSpec, model: OnnxModel):
        self.spec, self.model = spec, model
        self.anchors = make_anchors(spec)
        shapes = {name: o.shape for name, o in zip(model.output_names, model.session.get_outputs())}
        self.regressors_name = next(n for n, s in shapes.items() if s[-1] == 16)
        self.scores_name = next(n for n, s in shapes.items() if s[-1] == 1)

    def __call__(self, pyramid: Pyramid, min_score: float):
        tensor, scale, offset = letterbox(pyramid, self.spec.input_size)
        outputs = self.model(to_model_layout(tensor, self.model.input_shape))
        logits = np.clip(outputs[self.scores_name].reshape(-1).astype(np.float64), -SCORE_CLIP, SCORE_CLIP)
        scores = 1.0 / (1.0 + np.exp(-logits))
        keep = scores >= min_score
        scores, anchors = scores[keep], self.anchors[keep]
        raw = outputs[self.regressors_name].reshape(-1, 16)[keep]
        size = float(self.spec.input_size)
        centre = raw[:, 0:2] / size + anchors                     # normalised to the letterboxed input
        half = raw[:, 2:4] / size / 2.0
        boxes = np.concatenate([centre - half, centre + half], axis=1)
        keypoints = raw[:, 4:].reshape(-1, NUM_KEYPOINTS, 2) / size + anchors[:, None, :]
        # letterboxed [0, 1] -> image pixels
        boxes = (boxes * size - np.tile(offset, 2)) / scale
        keypoints = (keypoints * size - offset) / scale
        return scores.astype(np.float64), boxes.astype(np.float64), keypoints.astype(np.float64)


class FaceDetector:
    """Runs the configured BlazeFace model(s), each with its own weighted NMS and its own max_faces largest.

    With two models, a face both find comes back twice, once per model, not merged: the landmark model's
    face-presence score on each crop then picks the better one (FacePipeline drops the less confident of two
    overlapping faces). The models fail differently: the full-range one misses or misplaces faces that fill
    much of the image, the short-range one misses faces beyond ~2 m; averaging their boxes (weighted NMS
    across both) mixed a bad box into a good one, and keeping the higher detector score still lost faces."""

    def __init__(self, models: list[BlazeFaceModel]):
        self.models = models

    def __call__(self, image: np.ndarray, min_score: float, iou_threshold: float, max_faces: int,
                 models: list[BlazeFaceModel] | None = None) -> list[Detection]:
        """Faces in `image`, largest first, up to max_faces from each of `models` (default: all)."""
        detections: list[Detection] = []
        pyramid = Pyramid(image)
        for model in self.models if models is None else models:
            scores, boxes, keypoints = model(pyramid, min_score)
            if scores.size:
                found = weighted_nms(scores, boxes, keypoints, iou_threshold)
                found.sort(key=lambda d: -box_area(d.bbox))
                detections += found[:max_faces]
        detections.sort(key=lambda d: -box_area(d.bbox))
        return detections
