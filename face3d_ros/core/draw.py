"""Annotated images for people to look at: mesh wireframe, head axes, box and id. Used by the CLI and the
node's debug image; never called unless someone wants the picture."""
from __future__ import annotations

import cv2
import numpy as np

from .types import CameraModel, Face

AXIS_LENGTH_M = 0.08
AXIS_COLOURS = ((0, 0, 255), (0, 255, 0), (255, 0, 0))   # BGR: face x red, y green, z blue (RViz colours)
MESH_COLOUR = (200, 200, 200)
IRIS_COLOUR = (0, 220, 255)


def project(points_cam: np.ndarray, camera: CameraModel) -> np.ndarray:
    """(N, 3) camera-frame points -> (N, 2) distorted pixel coordinates. OpenCV distorts with an identity K and
    K is applied here, skew included (its projectPoints ignore K[0, 1])."""
    points = points_cam.reshape(-1, 1, 3).astype(np.float64)
    if camera.distortion_model == "equidistant":
        pts = cv2.fisheye.projectPoints(points, np.zeros(3), np.zeros(3), np.eye(3), camera.fisheye_D)[0]
    else:
        pts = cv2.projectPoints(points, np.zeros(3), np.zeros(3), np.eye(3), camera.D if camera.D.size else None)[0]
    return pts.reshape(-1, 2) @ camera.K[:2, :2].T + camera.K[:2, 2]


def draw_faces(image: np.ndarray, faces: list[Face], camera: CameraModel, triangles: np.ndarray,
               rate_hz: float | None = None) -> np.ndarray:
    """A copy of `image` (BGR) with each face's mesh, axes, box and label drawn on it."""
    canvas = image.copy()
    thin = max(1, round(max(image.shape[:2]) / 900))
    for face in faces:
        if face.landmarks_px is not None:
            points = face.landmarks_px[:, :2]
            polygons = np.round(points[triangles] * 16).astype(np.int32)  # 4 fractional bits: smooth lines
            cv2.polylines(canvas, list(polygons), True, MESH_COLOUR, 1, cv2.LINE_AA, shift=4)
            for iris in points[468:478:5]:
                cv2.circle(canvas, tuple(np.round(iris).astype(int)), 2 * thin, IRIS_COLOUR, -1, cv2.LINE_AA)
        if face.has_pose:
            ends = face.t_cam_face + AXIS_LENGTH_M * face.R_cam_face.T
            pixels = project(np.vstack([face.t_cam_face, ends]), camera)
            origin = tuple(np.round(pixels[0]).astype(int))
            for end, colour in zip(pixels[1:], AXIS_COLOURS):
                cv2.arrowedLine(canvas, origin, tuple(np.round(end).astype(int)), colour, 2 * thin, cv2.LINE_AA,
                                tipLength=0.15)
        x0, y0, x1, y1 = np.round(face.bbox).astype(int)
        cv2.rectangle(canvas, (x0, y0), (x1, y1), (0, 200, 0), thin)
        label = face.track_id or "face"
        if face.has_pose:
            label += f" {face.t_cam_face[2]:.2f} m"
        cv2.putText(canvas, label, (x0, max(12, y0 - 5)), cv2.FONT_HERSHEY_SIMPLEX, 0.5 * thin, (0, 200, 0),
                    thin, cv2.LINE_AA)
    if rate_hz is not None:
        cv2.putText(canvas, f"{rate_hz:.1f} Hz", (8, 20 * thin), cv2.FONT_HERSHEY_SIMPLEX, 0.6 * thin,
                    (0, 255, 255), thin, cv2.LINE_AA)
    return canvas
