"""Regions of interest: detection -> ROI, landmarks -> ROI (tracking), and the rotated crops they define.

As in MediaPipe, a ROI is a square turned so that the eyes are level in the crop (the landmark models
are trained on upright faces), enlarged around the face box.
Pixel coordinates follow OpenCV and CameraInfo: integer values at pixel centres.
"""
from __future__ import annotations

import math

import cv2
import numpy as np

from .types import Detection, Roi

# MediaPipe face-mesh indices of the eye corners: the person's right eye is on the image's left.
RIGHT_EYE_OUTER, RIGHT_EYE_INNER, LEFT_EYE_INNER, LEFT_EYE_OUTER = 33, 133, 362, 263
MESH_POINTS = 468


def eye_line_rotation(start: np.ndarray, end: np.ndarray) -> float:
    """Angle (radians) that turns the crop so the start -> end vector points along the crop's +x."""
    return float(np.arctan2(end[1] - start[1], end[0] - start[0]))


def square_roi(points: np.ndarray, start: np.ndarray, end: np.ndarray, scale: float) -> Roi:
    """Square ROI around the bounding box of `points`, turned along start -> end, enlarged by `scale`."""
    lo, hi = points.min(axis=0), points.max(axis=0)
    return Roi(center=(lo + hi) / 2.0, size=float(max(hi - lo)) * scale, rotation=eye_line_rotation(start, end))


def roi_from_detection(detection: Detection, scale: float) -> Roi:
    box = detection.bbox.reshape(2, 2)
    return square_roi(box, detection.keypoints[0], detection.keypoints[1], scale)


def landmark_box(landmarks_px: np.ndarray) -> np.ndarray:
    """x0, y0, x1, y1 of the mesh points (the iris points lie inside). Reduced as rows: numpy reduces the
    columns of an (N, 3) array ~6x slower."""
    rows = landmarks_px[:MESH_POINTS, :2].T.copy()
    return np.concatenate([rows.min(axis=1), rows.max(axis=1)])


def roi_from_landmarks(landmarks_px: np.ndarray, box: np.ndarray, scale: float) -> Roi:
    """The next image's crop from this image's landmarks and their `landmark_box` (ROI tracking)."""
    return square_roi(np.reshape(box, (2, 2)), landmarks_px[RIGHT_EYE_OUTER, :2], landmarks_px[LEFT_EYE_OUTER, :2],
                      scale)


def image_from_crop(roi: Roi, out_size: int, flip: bool = False) -> np.ndarray:
    """2x3 affine from crop coordinates (0..out_size, 0 at the crop's left edge) to image pixels."""
    c, s = np.cos(roi.rotation), np.sin(roi.rotation)
    linear = np.array([[c, -s], [s, c]]) * (roi.size / out_size)
    if flip:
        linear = linear @ np.diag([-1.0, 1.0])
    offset = roi.center - linear @ np.array([out_size / 2.0, out_size / 2.0])
    return np.hstack([linear, offset[:, None]])


_SAMPLE_SHIFT = np.array([0.5, 0.5])
_INV_255 = np.float32(1.0 / 255.0)
MAX_WINDOW_PIXELS = 1 << 21   # beyond ~2 Mpx the RGBA copy costs more than the 3-channel warp saves
_UNIT_SQUARE = np.array([[0.0, 1.0, 0.0, 1.0], [0.0, 0.0, 1.0, 1.0]])   # corners, as x and y rows


def crop_into(image: np.ndarray, roi: Roi, out_size: int, out: np.ndarray, flip: bool = False) -> np.ndarray:
    """The ROI resampled to out_size x out_size RGB in [0, 1], written as float32 into `out` (e.g. one slot
    of a model's input batch): no intermediate float copies. Returns the crop -> image affine.

    Only the image window the crop samples is read: converted to RGBA (the channel swap comes free), it is
    resampled by OpenCV's 4-channel warp, which is ~2x faster than its 3-channel one; the pixels equal the
    whole-image warp's within one grey level."""
    affine = image_from_crop(roi, out_size, flip)
    # warpAffine samples crop pixel u at its centre, u + 0.5 in crop coordinates
    sample = affine.copy()
    sample[:, 2] += affine[:, :2] @ _SAMPLE_SHIFT
    x0, y0, x1, y1 = _sampled_window(sample, out_size, image.shape)
    if (x1 - x0) * (y1 - y0) <= MAX_WINDOW_PIXELS:
        sample[:, 2] -= (x0, y0)
        source, to_rgb = cv2.cvtColor(image[y0:y1, x0:x1], cv2.COLOR_BGR2RGBA), cv2.COLOR_RGBA2RGB
    else:   # a face filling a huge image: no RGBA copy of it
        source, to_rgb = image, cv2.COLOR_BGR2RGB
    patch = cv2.warpAffine(source, sample, (out_size, out_size),
                           flags=cv2.INTER_LINEAR | cv2.WARP_INVERSE_MAP, borderMode=cv2.BORDER_REPLICATE)
    # to RGB with cvtColor, then uint8 -> float32 and the scale in one pass into `out` (numpy on a strided
    # channel view is ~4x slower)
    np.multiply(cv2.cvtColor(patch, to_rgb), _INV_255, out=out, dtype=np.float32)
    return affine


def _sampled_window(sample: np.ndarray, out_size: int, shape: tuple) -> tuple[int, int, int, int]:
    """x0, y0, x1, y1 (exclusive) of the image pixels a warp by `sample` (crop pixel -> image point) reads:
    the crop corners' box plus the bilinear neighbour, clipped to the image but never empty, so that the
    border pixels a crop reaching outside the image replicates are inside it."""
    corners = sample[:, :2] @ ((out_size - 1.0) * _UNIT_SQUARE) + sample[:, 2:]   # (2, 4): x and y rows
    h, w = shape[:2]
    if not np.isfinite(corners).all():
        return 0, 0, w, h    # a broken ROI: the warp decides what it samples, as for the whole image
    (x_lo, y_lo), (x_hi, y_hi) = corners.min(axis=1).tolist(), corners.max(axis=1).tolist()
    x0 = min(max(math.floor(x_lo), 0), w - 1)
    y0 = min(max(math.floor(y_lo), 0), h - 1)
    x1 = min(max(math.floor(x_hi) + 2, x0 + 1), w)
    y1 = min(max(math.floor(y_hi) + 2, y0 + 1), h)
    return x0, y0, x1, y1


def crop_to_image(points: np.ndarray, affine: np.ndarray, out_size: int, roi_size: float) -> np.ndarray:
    """(N, 3) crop points (x, y, z in crop pixels) -> image pixels; z scales like x (MediaPipe)."""
    out = np.empty((len(points), 3))
    np.matmul(points[:, :2], affine[:, :2].T, out=out[:, :2])
    out[:, :2] += affine[:, 2]
    np.multiply(points[:, 2], roi_size / out_size, out=out[:, 2])
    return out


def roi_iou(a: Roi, b: Roi) -> float:
    """IoU of the axis-aligned squares of two ROIs (enough to tell whether they hold the same face)."""
    ha, hb = a.size / 2.0, b.size / 2.0
    lo = np.maximum(a.center - ha, b.center - hb)
    hi = np.minimum(a.center + ha, b.center + hb)
    inter = float(np.prod(np.clip(hi - lo, 0, None)))
    return inter / (a.size ** 2 + b.size ** 2 - inter)


def box_iou(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """IoU of every box in `a` (N, 4) with every box in `b` (M, 4), boxes as x0, y0, x1, y1 -> (N, M)."""
    if len(a) == 1 and len(b) == 1:
        iou = _finite_pair_iou(np.asarray(a, dtype=np.float64)[0].tolist(),
                               np.asarray(b, dtype=np.float64)[0].tolist())
        if iou is not None:
            return np.array([[iou]])
    inter, area_a, area_b = _intersections(a, b)
    union = area_a[:, None] + area_b[None, :] - inter
    return np.divide(inter, union, out=np.zeros_like(inter), where=union > 0.0)


def _intersections(a: np.ndarray, b: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(N, M) intersection areas of the boxes in `a` (N, 4) and `b` (M, 4), and the areas of each."""
    w = np.minimum(a[:, None, 2], b[None, :, 2]) - np.maximum(a[:, None, 0], b[None, :, 0])
    h = np.minimum(a[:, None, 3], b[None, :, 3]) - np.maximum(a[:, None, 1], b[None, :, 1])
    inter = np.maximum(w, 0.0) * np.maximum(h, 0.0)
    return inter, (a[:, 2] - a[:, 0]) * (a[:, 3] - a[:, 1]), (b[:, 2] - b[:, 0]) * (b[:, 3] - b[:, 1])


def box_area(box) -> float:
    """Area of one x0, y0, x1, y1 box."""
    x0, y0, x1, y1 = box
    return float((x1 - x0) * (y1 - y0))


def box_inside_fraction(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """For every box in `a` (N, 4) and in `b` (M, 4): the fraction of the smaller of the two that lies in the
    other -> (N, M); 1 when one contains the other (where IoU can be small)."""
    inter, area_a, area_b = _intersections(a, b)
    smaller = np.minimum(area_a[:, None], area_b[None, :])
    return np.divide(inter, smaller, out=np.zeros_like(inter), where=smaller > 0.0)


def _finite_pair_iou(a: list, b: list) -> float | None:
    """box_iou of one pair by the same operations on floats, ~10x faster than its ~15 numpy calls (the
    tracker's usual case: one face); None for non-finite coordinates, where Python's min and max do not
    propagate NaN as numpy's do."""
    ax0, ay0, ax1, ay1 = a
    bx0, by0, bx1, by1 = b
    if not math.isfinite(ax0 + ay0 + ax1 + ay1 + bx0 + by0 + bx1 + by1):
        return None
    inter = max(min(ax1, bx1) - max(ax0, bx0), 0.0) * max(min(ay1, by1) - max(ay0, by0), 0.0)
    union = (ax1 - ax0) * (ay1 - ay0) + (bx1 - bx0) * (by1 - by0) - inter
    return inter / union if union > 0.0 else 0.0
