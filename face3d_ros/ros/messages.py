"""Core Faces -> ROS messages: FacePoseArray, MarkerArray, TF transforms and the mesh topology.

Pure functions of (header, faces, ...): no node, no publisher, so each is tested on its own. Every message
carries the IMAGE's header (stamp and frame_id: the camera's optical frame), never "now". Rotation-matrix
-> quaternion and pose/transform building happen in `conversions` only.

Frames (README "Frames and conventions"):
- `face_<id>` (REP-155): origin between the eyes, x out of the face, y to the person's left, z up.
- `gaze_<id>`: same origin, optical convention for a "camera" looking out of the face: z along the gaze
  (= face +x), x to the right and y down as seen by that camera. Looking out of the face, "right" is the
  person's right (= face -y) and "down" is face -z, so the gaze axes in face coordinates are
      x_gaze = -y_face,  y_gaze = -z_face,  z_gaze = +x_face       (x_gaze cross y_gaze = z_gaze: right-handed)
  i.e. R_face_gaze = [[0, 0, 1], [-1, 0, 0], [0, -1, 0]] (columns = gaze axes). For a face looking straight
  into the camera (R_cam_face columns (0,0,-1), (1,0,0), (0,-1,0)) this gives R_cam_gaze columns
  (-1,0,0), (0,1,0), (0,0,-1): the gaze's x points to the image's left (the person's right), its y down,
  its z back into the camera.
"""
from __future__ import annotations

import array
import gc
from typing import Iterable

import numpy as np
from builtin_interfaces.msg import Duration
from geometry_msgs.msg import Point
from sensor_msgs.msg import RegionOfInterest
from std_msgs.msg import ColorRGBA, Header
from visualization_msgs.msg import Marker, MarkerArray

from face3d_ros.msg import FaceMeshTopology, FacePose, FacePoseArray

from ..core.types import CameraModel, Face
from . import conversions

R_FACE_GAZE = np.array([[0.0, 0.0, 1.0],
                        [-1.0, 0.0, 0.0],
                        [0.0, -1.0, 0.0]])

# Covariance model (see pose_covariance).
MIN_PIXEL_ERROR = 1.0          # px: landmark noise floor even when the fit is perfect
DEPTH_PRIOR_UNMEASURED = 0.08  # relative depth error from the head-size prior (adult head sizes: ~±8 %)
DEPTH_PRIOR_IRIS = 0.04        # ... when the iris measured the head's size
MIN_ROTATION_STD = 0.02        # rad (~1 deg)
MAX_ROTATION_STD = 0.5         # rad

MARKER_LIFETIME = Duration(sec=0, nanosec=500_000_000)
AXIS_LENGTH_M = 0.1
MESH_ID, AXIS_X_ID, AXIS_Y_ID, AXIS_Z_ID, TEXT_ID = range(5)
MARKER_IDS = (MESH_ID, AXIS_X_ID, AXIS_Y_ID, AXIS_Z_ID, TEXT_ID)
AXIS_COLOURS = ((1.0, 0.0, 0.0), (0.0, 1.0, 0.0), (0.0, 0.0, 1.0))   # x red, y green, z blue (RViz's)


def float32_array(values: np.ndarray) -> array.array:
    """A float32[] message field from a numpy array: one memory copy (no per-element Python work)."""
    out = array.array("f")
    out.frombytes(np.ascontiguousarray(values, dtype=np.float32).tobytes())
    return out


def pose_covariance(face: Face, camera: CameraModel) -> np.ndarray:
    """Diagonal 6x6 covariance (row-major, REP-103 order x, y, z, rot X, rot Y, rot Z) of a face pose.

    A first-order model from the fit residual and the depth, documented here as the one formula:
        s   = max(fit_rmse_px, 1 px)                         pixel error of the landmarks
        f   = (fx + fy) / 2                                  focal length, px
        z   = depth of the face (t_z, m),  w = face box width (px)
        sigma_x = sigma_y = z * s / f                        lateral: one pixel error at depth z
        sigma_z = z * sqrt((s / w)^2 + p^2)                  depth: scale error of the fit, plus the head-size
                                                             prior p = 0.08 (0.04 when the iris measured it)
        sigma_rot = clip(s / w * 2, 0.02, 0.5) rad           each axis: pixel error over the face's size
    The variances are the squares. It is an honest order of magnitude, not a calibrated uncertainty.
    """
    s = max(float(face.fit_rmse_px), MIN_PIXEL_ERROR) if np.isfinite(face.fit_rmse_px) else 10.0
    f = 0.5 * (camera.K[0, 0] + camera.K[1, 1])
    z = max(float(face.t_cam_face[2]), 1e-3)
    w = max(float(face.bbox[2] - face.bbox[0]), 1.0)
    prior = DEPTH_PRIOR_IRIS if face.iris_samples else DEPTH_PRIOR_UNMEASURED
    sigma_xy = z * s / f
    sigma_z = z * np.hypot(s / w, prior)
    sigma_rot = float(np.clip(2.0 * s / w, MIN_ROTATION_STD, MAX_ROTATION_STD))
    cov = np.zeros(36)
    cov[[0, 7, 14, 21, 28, 35]] = [sigma_xy ** 2, sigma_xy ** 2, sigma_z ** 2] + [sigma_rot ** 2] * 3
    return cov


def clipped_roi(bbox: np.ndarray, width: int, height: int) -> RegionOfInterest:
    """The face box as a RegionOfInterest, rounded outwards and clipped to the image."""
    x0 = int(np.clip(np.floor(bbox[0]), 0, width))
    y0 = int(np.clip(np.floor(bbox[1]), 0, height))
    x1 = int(np.clip(np.ceil(bbox[2]), 0, width))
    y1 = int(np.clip(np.ceil(bbox[3]), 0, height))
    return RegionOfInterest(x_offset=x0, y_offset=y0, width=max(0, x1 - x0), height=max(0, y1 - y0),
                            do_rectify=False)


def face_pose(header: Header, face: Face, face_id: str, camera: CameraModel, width: int,
              height: int) -> FacePose:
    """One face; a face without a usable pose gets covariance[0] = -1 (unknown) and an all-zero pose."""
    msg = FacePose(header=header, id=face_id, track_state=int(face.track_state),
                   track_age=max(0, int(face.track_age)))
    try:
        msg.pose.pose = conversions.pose_msg(face.R_cam_face, face.t_cam_face)
        msg.pose.covariance = pose_covariance(face, camera)
    except (TypeError, ValueError):   # no pose (or not a finite rotation): "no estimate", as sensor_msgs/Imu says it
        msg.pose.covariance[0] = -1.0
    msg.bbox = clipped_roi(face.bbox, width, height)
    msg.detection_score = float(face.detection_score)
    msg.landmark_confidence = float(face.landmark_score)
    msg.fit_rmse_px = float(face.fit_rmse_px)
    msg.depth_scale = float(face.depth_scale)
    if face.landmarks_px is not None:
        msg.landmarks_2d = float32_array(face.landmarks_px[:, :2])
    if face.vertices_cam is not None:
        msg.vertices = float32_array(face.vertices_cam)
    return msg


def face_ids(faces: list[Face]) -> list[str]:
    """The published id of each face: its track id, or (tracking off) "u<index>" for this image only."""
    return [f.track_id or f"u{i}" for i, f in enumerate(faces)]


def face_pose_array(header: Header, faces: list[Face], camera: CameraModel, width: int, height: int,
                    latency_s: float = 0.0) -> FacePoseArray:
    ids = face_ids(faces)
    return FacePoseArray(header=header, processing_latency=float(latency_s),
                         faces=[face_pose(header, f, i, camera, width, height) for f, i in zip(faces, ids)])


def transforms(header: Header, faces: list[Face], frame_prefix: str = "") -> list:
    """TransformStamped `<prefix>face_<id>` and `<prefix>gaze_<id>` for each face with a pose, child of the
    image's frame, stamped with the image's stamp."""
    out = []
    for face, face_id in zip(faces, face_ids(faces)):
        if not face.has_pose:
            continue
        out.append(conversions.transform_stamped(header, f"{frame_prefix}face_{face_id}", face.R_cam_face,
                                                 face.t_cam_face))
        out.append(conversions.transform_stamped(header, f"{frame_prefix}gaze_{face_id}",
                                                 face.R_cam_face @ R_FACE_GAZE, face.t_cam_face))
    return out


def _point(p) -> Point:
    return Point(x=float(p[0]), y=float(p[1]), z=float(p[2]))


# Building ~2,700 mesh Points with Point(x=, y=, z=) costs ~0.8 us each (the generated __init__ and setters);
# filling the slots of Point.__new__ objects directly is ~4x faster and publishes identically. Only where the
# generated class has exactly the slots we know (x, y, z and, since Jazzy, _check_fields); else the constructor.
_POINT_SLOTS = set(getattr(Point, "__slots__", ()))
_FAST_POINTS = _POINT_SLOTS in ({"_x", "_y", "_z"}, {"_x", "_y", "_z", "_check_fields"})
_POINT_CHECK_FIELDS = getattr(Point(), "_check_fields", False)


def points(xyz: np.ndarray) -> list[Point]:
    """(N, 3) array -> N geometry_msgs/Point (float64 values, as Point(x=float(...), ...) gives)."""
    rows = np.asarray(xyz, dtype=np.float64).reshape(-1, 3).tolist()
    if not _FAST_POINTS:
        return [Point(x=x, y=y, z=z) for x, y, z in rows]
    new, out = Point.__new__, []
    append = out.append
    # Thousands of new objects trigger the cyclic garbage collector several times, each pass walking the
    # whole heap (onnxruntime, rclpy, numpy: that doubled the time, measured). Points hold no cycles: pause it.
    collecting = gc.isenabled()
    gc.disable()
    try:
        if "_check_fields" in _POINT_SLOTS:
            check = _POINT_CHECK_FIELDS
            for x, y, z in rows:
                p = new(Point)
                p._x, p._y, p._z, p._check_fields = x, y, z, check
                append(p)
        else:
            for x, y, z in rows:
                p = new(Point)
                p._x, p._y, p._z = x, y, z
                append(p)
    finally:
        if collecting:
            gc.enable()
    return out


def _marker(header: Header, ns: str, marker_id: int, kind: int) -> Marker:
    m = Marker(header=header, ns=ns, id=marker_id, type=kind, action=Marker.ADD, lifetime=MARKER_LIFETIME)
    m.pose.orientation.w = 1.0
    return m


_INDEX_CACHE: dict = {}


def _triangle_indices(triangles: np.ndarray, vertex_count: int) -> np.ndarray:
    """The flat vertex indices of the triangles whose corners all exist (cached: the topology never changes)."""
    key = (id(triangles), triangles.shape, vertex_count)
    cached = _INDEX_CACHE.get(key)
    if cached is None or cached[0] is not triangles:
        flat = triangles[triangles.max(axis=1) < vertex_count].reshape(-1)
        if len(_INDEX_CACHE) > 8:
            _INDEX_CACHE.clear()
        cached = _INDEX_CACHE[key] = (triangles, flat)
    return cached[1]


def face_markers(header: Header, face: Face, face_id: str, triangles: np.ndarray) -> list[Marker]:
    """Mesh (TRIANGLE_LIST), three head-axis ARROWs and a TEXT_VIEW_FACING label, all in the camera frame."""
    markers = []
    if face.vertices_cam is not None:
        mesh = _marker(header, face_id, MESH_ID, Marker.TRIANGLE_LIST)
        mesh.points = points(face.vertices_cam[_triangle_indices(triangles, len(face.vertices_cam))])
        mesh.scale.x = mesh.scale.y = mesh.scale.z = 1.0
        mesh.color = ColorRGBA(r=0.85, g=0.75, b=0.65, a=0.6)
        markers.append(mesh)
    if face.has_pose:
        origin = face.t_cam_face
        for marker_id, axis, colour in zip((AXIS_X_ID, AXIS_Y_ID, AXIS_Z_ID), face.R_cam_face.T, AXIS_COLOURS):
            arrow = _marker(header, face_id, marker_id, Marker.ARROW)
            arrow.points = [_point(origin), _point(origin + AXIS_LENGTH_M * axis)]
            arrow.scale.x, arrow.scale.y, arrow.scale.z = 0.006, 0.012, 0.02   # shaft, head diameter, head length
            arrow.color = ColorRGBA(r=colour[0], g=colour[1], b=colour[2], a=1.0)
            markers.append(arrow)
        text = _marker(header, face_id, TEXT_ID, Marker.TEXT_VIEW_FACING)
        text.pose.position = _point(origin + 0.14 * face.R_cam_face[:, 2])   # above the head
        text.scale.z = 0.04
        text.color = ColorRGBA(r=1.0, g=1.0, b=1.0, a=1.0)
        text.text = f"{face_id} {float(np.linalg.norm(origin)):.2f} m"
        markers.append(text)
    return markers


def delete_markers(header: Header, gone_ids: Iterable[str]) -> list[Marker]:
    """DELETE for every marker of faces that went away (their lifetime would also expire them)."""
    return [Marker(header=header, ns=face_id, id=marker_id, action=Marker.DELETE)
            for face_id in sorted(gone_ids) for marker_id in MARKER_IDS]


def marker_array(header: Header, faces: list[Face], triangles: np.ndarray,
                 gone_ids: Iterable[str] = ()) -> MarkerArray:
    """Markers of every face (namespace = face id) plus DELETEs for `gone_ids`."""
    markers = delete_markers(header, gone_ids)
    for face, face_id in zip(faces, face_ids(faces)):
        markers += face_markers(header, face, face_id, triangles)
    return MarkerArray(markers=markers)


def mesh_topology(triangles: np.ndarray, vertex_count: int) -> FaceMeshTopology:
    tri = np.asarray(triangles)
    if tri.size and (tri.min() < 0 or tri.max() >= vertex_count):
        raise ValueError(f"triangle indices must be in [0, {vertex_count}), got [{tri.min()}, {tri.max()}]")
    flat = array.array("I")
    flat.frombytes(np.ascontiguousarray(tri, dtype=np.uint32).reshape(-1).tobytes())
    return FaceMeshTopology(vertex_count=int(vertex_count), triangles=flat)
