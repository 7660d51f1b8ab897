"""Metric head pose and dense face mesh from MediaPipe face-mesh landmarks (no ROS imports).

Frames and units (see types.py and the README):
- camera: REP-103 optical frame (x right, y down, z forward), metres;
- face: REP-155 (x out of the face, y to the person's left, z up), origin between the eyes (the midpoint of
  the two eye centres, each the mean of its two corners), metres;
- canonical: MediaPipe's canonical face model (x the person's left, y up, z out of the face); the .obj files
  are in centimetres, everything here is in metres. v_canonical = P_CANONICAL_FROM_FACE @ v_face.

The pose is a perspective-n-point fit of the rigid canonical face to the undistorted landmarks: an SQPnP
start on MediaPipe's Procrustes landmarks (the most rigid ones), then a weighted Gauss-Newton refinement on
all 468 mesh points of (a) the 2D reprojection error and (b) MediaPipe's relative depth z (same pixel scale
as x, y: z / fx should equal the point's depth offset over the face's depth, up to a constant). Each point
is weighted by how rigid it is (Procrustes basis), by how squarely it faces the camera under the current
estimate (MediaPipe's points on the far side of a turned face are guesses) and by a robust (Huber) term.
Measured on the AFLW2000-3D development images, the depth term cut the mean angle error from 5.4 to 4.6 deg
(the 2D points of a strongly turned face are compressed; their z keeps the turn); on exact synthetic
landmarks both terms agree exactly. The canonical head has average adult size; when both irises are seen
well the head's size (and so its distance) is corrected from the iris diameter, which varies little between
adults.
"""
from __future__ import annotations

import math
import re
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

import cv2
import numpy as np
from scipy.spatial.transform import Rotation

from .config import PoseConfig
from .model_files import models_dir
from .types import CameraModel, InputError

MESH_POINTS = 468                      # MediaPipe face-mesh points
MESH_WITH_IRIS_POINTS = 478            # + 5 points per iris (centre first, then 4 contour points)
RIGHT_IRIS = 468                       # the person's right iris (beside landmark 33)
LEFT_IRIS = 473                        # the person's left iris (beside landmark 263)
RIGHT_EYE_CORNERS = (33, 133)          # outer, inner
LEFT_EYE_CORNERS = (263, 362)

CANONICAL_OBJ = "canonical_face_model.obj"
CANONICAL_WITH_IRIS_OBJ = "face_model_with_iris.obj"
PROCRUSTES_PBTXT = "geometry_pipeline_metadata_landmarks.pbtxt"

# v_canonical = P @ v_face: face x (out of the face) = canonical z, face y (left) = canonical x,
# face z (up) = canonical y.
P_CANONICAL_FROM_FACE = np.array([[0.0, 1.0, 0.0], [0.0, 0.0, 1.0], [1.0, 0.0, 0.0]])
# A frontal face looking into the camera: face x = -z_cam, face y = +x_cam, face z = -y_cam.
R_CAM_FACE_FRONTAL = np.array([[0.0, 1.0, 0.0], [0.0, 0.0, -1.0], [-1.0, 0.0, 0.0]])
_FLIP_YZ = np.diag([1.0, -1.0, -1.0])

# --- fit settings (reasoned defaults, checked on synthetic data and AFLW2000-3D samples) ---
BASE_WEIGHT = 0.2            # weight of a mesh point outside MediaPipe's Procrustes basis (basis max = 1)
VISIBLE_COS_LO = 0.0         # facing-the-camera cosine at which a point's weight starts to rise from 0 ...
VISIBLE_COS_HI = 0.35        # ... and where it reaches full weight
HUBER_K = 2.0                # Huber threshold, in units of the robust residual scale
GN_ITERATIONS = 3            # Gauss-Newton steps at most (the third moves real fits by ~0.03 deg)
DEPTH_WEIGHT = 1.0           # weight of MediaPipe's relative depth (z) residual against the 2D one
GN_TOLERANCE = 1e-4          # stop when the update (rad, and m relative to depth) is below this
# Tracking (started from the previous image's pose): stop when the update's rotation is below
# GN_WARM_TOLERANCE_RAD and its translation below GN_WARM_TOLERANCE_M. The robust weights move with the pose,
# so convergence is linear: on real tracked frames the next step was at most 1/3 of such an update (median
# 1/20), which keeps the pose within 0.01 deg and 0.1 mm of GN_TOLERANCE's answer (measured on 2700 tracked
# real frames: 0.002 deg and 0.05 mm at most) for ~0.45 fewer steps per image (of ~2.9).
GN_WARM_TOLERANCE_RAD = 5e-4
GN_WARM_TOLERANCE_M = 3e-4

# --- iris scale ---
# On the AFLW2000-3D development images, irises under ~12 px or faces pitched beyond ~30 deg gave iris outlines
# ~15 % too small for their interpupillary distance (anatomy: IPD / iris diameter ~ 5.4; measured up to 7),
# i.e. blur and eyelids shrink the outline; larger, frontal irises agreed with anatomy.
MIN_IRIS_DIAMETER_PX = 12.0  # below this an iris is too small to measure a size from (1 px = 8 %)
MAX_IRIS_TURN_DEG = 30.0     # face turned further from the camera than this: no iris scale
MAX_IRIS_DISAGREEMENT = 0.15  # the two eyes' scales must agree within this fraction
DEPTH_SCALE_RANGE = (0.85, 1.2)  # plausible adult head size relative to the canonical head
# A tracked head's size is the mean of its iris measurements, the last IRIS_MEMORY weighing most (a running
# mean of the first ones, then an exponential one): one image's measurement varies by ~5-10%
IRIS_MEMORY = 10

MIN_FACE_EXTENT_PX = 4.0     # landmarks spanning less than this are no face (collapsed or garbage)

# Error (RMS reprojection / face size) at which the fit confidence has fallen to half the landmark score.
HALF_CONFIDENCE_ERROR = 0.05


# ----------------------------------------------------------------------------------------------------------
# conventions
# ----------------------------------------------------------------------------------------------------------

def yaw_pitch_roll_deg(R_cam_face: np.ndarray) -> tuple[float, float, float]:
    """Yaw, pitch and roll in degrees of a face rotation, in the AFLW2000-3D (300W-LP) convention.

    With Ra = P R_cam_face^T diag(1, -1, -1) (P = P_CANONICAL_FROM_FACE), Ra = Rz(roll) Ry(yaw) Rx(pitch):
    yaw = asin(-Ra[2,0]), pitch = atan2(Ra[2,1], Ra[2,2]), roll = atan2(Ra[1,0], Ra[0,0]).
    Signs: +yaw = the face turns toward the image's left, +pitch = the face looks up, +roll = the top of the
    head tilts toward the image's right. A frontal face looking into the camera gives (0, 0, 0). The angles
    are relative to the camera's optical axis (not to the line of sight to the face).
    """
    R = np.asarray(R_cam_face, dtype=np.float64)
    Ra = P_CANONICAL_FROM_FACE @ R.T @ _FLIP_YZ
    yaw = math.asin(float(np.clip(-Ra[2, 0], -1.0, 1.0)))
    pitch = math.atan2(Ra[2, 1], Ra[2, 2])
    roll = math.atan2(Ra[1, 0], Ra[0, 0])
    return math.degrees(yaw), math.degrees(pitch), math.degrees(roll)


def rotation_from_yaw_pitch_roll_deg(yaw: float, pitch: float, roll: float) -> np.ndarray:
    """R_cam_face (3x3) for yaw, pitch, roll in degrees: the inverse of `yaw_pitch_roll_deg`.

    R_cam_face = diag(1, -1, -1) Ra^T P with Ra = Rz(roll) Ry(yaw) Rx(pitch) (AFLW2000-3D convention;
    same signs as `yaw_pitch_roll_deg`).
    """
    Ra = Rotation.from_euler("ZYX", [roll, yaw, pitch], degrees=True).as_matrix()  # Rz(roll) Ry(yaw) Rx(pitch)
    return _FLIP_YZ @ Ra.T @ P_CANONICAL_FROM_FACE


def rotation_to_line_of_sight(t_cam_face: np.ndarray) -> np.ndarray:
    """The smallest rotation that turns the camera's optical axis (+z) onto the ray to `t_cam_face`.

    `R_los.T @ R_cam_face` is the face's rotation relative to its line of sight: what a weak-perspective
    (scaled orthographic) fit of the same image measures, such as AFLW2000-3D's and 300W-LP's Pose_Para
    labels. A face off the image centre is seen from the side by a pinhole camera: a face 20 deg to the
    image's right of the optical axis, looking straight into the camera, has a camera-relative yaw of +20 deg
    (turned toward the image's left) and a line-of-sight yaw of 0.
    """
    t = np.asarray(t_cam_face, dtype=np.float64).reshape(3)
    d = t / np.linalg.norm(t)
    axis = np.array([-d[1], d[0], 0.0])          # z x d
    s = float(np.linalg.norm(axis))
    if s < 1e-15:
        return np.eye(3) if d[2] > 0 else np.diag([1.0, -1.0, -1.0])
    return cv2.Rodrigues(axis / s * math.atan2(s, float(d[2])))[0]


def yaw_pitch_roll_line_of_sight_deg(R_cam_face: np.ndarray, t_cam_face: np.ndarray) -> tuple[float, float, float]:
    """`yaw_pitch_roll_deg` of the rotation relative to the line of sight to the face (see
    `rotation_to_line_of_sight`): the convention of weak-perspective labels (AFLW2000-3D, 300W-LP)."""
    return yaw_pitch_roll_deg(rotation_to_line_of_sight(t_cam_face).T @ np.asarray(R_cam_face, dtype=np.float64))


def quaternion_xyzw(R: np.ndarray) -> np.ndarray:
    """Unit quaternion (x, y, z, w) of a rotation matrix, as geometry_msgs/Quaternion orders it, w >= 0."""
    return Rotation.from_matrix(np.asarray(R, dtype=np.float64)).as_quat(canonical=True)


# ----------------------------------------------------------------------------------------------------------
# 68-point (iBUG / 300W) subset of the mesh
# ----------------------------------------------------------------------------------------------------------

# The 68 iBUG points as MediaPipe mesh indices, in iBUG order: jaw 0-16 from the person's right ear to the
# left one, right brow 17-21, left brow 22-26, nose bridge 27-30, nostrils 31-35, right eye 36-41, left eye
# 42-47 (from the outer corner, clockwise in the image), outer lips 48-59, inner lips 60-67.
# This is the widely used mapping (e.g. LatentSync, face-alignment ports), checked by plotting it on the
# canonical mesh and against hand-labelled 300W/300-VW images (NME 4.2 %, 4 faces). Note: iBUG's jaw points
# 0-16 lie on the face's visible silhouette (they slide over the cheek as the head turns), while here they
# are fixed mesh vertices on a contour of the face: at large yaw the far-side jaw points stay on the hidden
# side of the face instead of moving to the outline (as in AFLW2000-3D's 3D landmarks). AFLW2000-3D also
# places its jaw about one mesh vertex lower on the contour (its point 0 sits below the eye line, at mesh
# vertex 234, where iBUG's sits at about eye level, near 162).
LANDMARKS_68 = np.array([
    162, 234, 93, 58, 172, 136, 149, 148, 152, 377, 378, 365, 397, 288, 323, 454, 389,  # jaw 0-16
    71, 63, 105, 66, 107,                                       # right brow 17-21
    336, 296, 334, 293, 301,                                    # left brow 22-26
    168, 197, 5, 4,                                             # nose bridge 27-30
    75, 97, 2, 326, 305,                                        # nostrils 31-35
    33, 160, 158, 133, 153, 144,                                # right eye 36-41
    362, 385, 387, 263, 373, 380,                               # left eye 42-47
    61, 39, 37, 0, 267, 269, 291, 405, 314, 17, 84, 181,        # outer lips 48-59
    78, 82, 13, 312, 308, 317, 14, 87,                          # inner lips 60-67
], dtype=np.int64)
LANDMARKS_68.setflags(write=False)


@lru_cache(maxsize=4)
def mesh_mirror_indices(folder: str = "", points: int = MESH_POINTS) -> np.ndarray:
    """(points,) index map of the face mesh's left-right mirror (468 mesh points, or 478 with the irises):
    vertex i of a mirrored face is vertex mirror[i] of the original (the person's right eye corner 33 <->
    left 263, iris 468 <-> 473 with its outer and inner edge points swapped, midline points map to
    themselves). MediaPipe's canonical mesh is exactly symmetric about x = 0, so the map is a permutation
    and an involution; ValueError if the model files say otherwise.

    Use: landmarks predicted on a horizontally mirrored crop, mapped back to image pixels, are
    `points[mirror]` in the original's vertex order (test-time flip averaging)."""
    vertices = load_canonical_face(folder).vertices[:points]
    mirrored = vertices * np.array([-1.0, 1.0, 1.0])
    distance = np.linalg.norm(mirrored[:, None, :] - vertices[None, :, :], axis=2)
    mirror = np.argmin(distance, axis=1)
    scale = float(np.ptp(vertices, axis=0).max())
    if (len(vertices) != points or distance[np.arange(points), mirror].max() > 1e-4 * scale
            or not np.array_equal(mirror[mirror], np.arange(points))):
        raise ValueError("the canonical face mesh is not left-right symmetric")
    mirror.setflags(write=False)
    return mirror


def landmarks_68(landmarks_px: np.ndarray) -> np.ndarray:
    """(68, 2) iBUG-order image points (x, y) from MediaPipe landmarks (N >= 468, 2 or 3 columns)."""
    points = np.asarray(landmarks_px, dtype=np.float64)
    if points.ndim != 2 or points.shape[0] < MESH_POINTS or points.shape[1] not in (2, 3):
        raise InputError(f"landmarks must be (468 or 478, 2 or 3), got shape {points.shape}")
    return points[LANDMARKS_68, :2].copy()


# ----------------------------------------------------------------------------------------------------------
# canonical face
# ----------------------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class CanonicalFace:
    """MediaPipe's canonical face in metres (478 vertices with the irises), read-only arrays.

    vertices, normals: canonical axes (x the person's left, y up, z out of the face).
    vertices_face, normals_face: REP-155 face frame (x out, y left, z up), vertices relative to `origin`.
    triangles (898, 3): 0-based, counter-clockwise seen from in front of the face (normals point out).
    iris_triangles (8, 3): the two iris discs of face_model_with_iris.obj.
    procrustes_weights (468,): MediaPipe's Procrustes landmark weights (0 off the basis).
    origin (3,): the face frame origin in canonical coordinates (the midpoint of the two eye centres).
    iris_diameter_m: the model's own iris diameter (mean over both eyes and both axes).
    """

    vertices: np.ndarray
    normals: np.ndarray
    vertices_face: np.ndarray
    normals_face: np.ndarray
    triangles: np.ndarray
    iris_triangles: np.ndarray
    procrustes_weights: np.ndarray
    origin: np.ndarray
    iris_diameter_m: float


def _read_obj(path: Path) -> tuple[np.ndarray, np.ndarray]:
    vertices, faces = [], []
    for line in path.read_text().splitlines():
        parts = line.split()
        if not parts:
            continue
        if parts[0] == "v":
            vertices.append([float(x) for x in parts[1:4]])
        elif parts[0] == "f":
            faces.append([int(p.split("/")[0]) - 1 for p in parts[1:]])
    if not vertices or not faces or any(len(f) != 3 for f in faces):
        raise ValueError(f"{path} is not a triangle mesh")
    return np.array(vertices, dtype=np.float64), np.array(faces, dtype=np.int64)


def _read_procrustes_weights(path: Path) -> np.ndarray:
    weights = np.zeros(MESH_POINTS)
    pattern = re.compile(r"landmark_id:\s*(\d+)\s+weight:\s*([-+0-9.eE]+)")
    for index, weight in pattern.findall(path.read_text()):
        weights[int(index)] = float(weight)
    if not np.any(weights > 0):
        raise ValueError(f"no Procrustes weights in {path}")
    return weights


def _vertex_normals(vertices: np.ndarray, triangles: np.ndarray) -> np.ndarray:
    """Area-weighted vertex normals (counter-clockwise triangles give outward normals)."""
    a, b, c = (vertices[triangles[:, k]] for k in range(3))
    face_normals = np.cross(b - a, c - a)          # length = 2 x area
    normals = np.zeros_like(vertices)
    for k in range(3):
        np.add.at(normals, triangles[:, k], face_normals)
    return normals / np.maximum(np.linalg.norm(normals, axis=1, keepdims=True), 1e-12)


@lru_cache(maxsize=4)
def load_canonical_face(folder: str = "") -> CanonicalFace:
    """The canonical face from `models_dir(folder)` (cached: read once per folder)."""
    root = models_dir(folder)
    base_vertices, triangles = _read_obj(root / CANONICAL_OBJ)
    iris_vertices, iris_faces = _read_obj(root / CANONICAL_WITH_IRIS_OBJ)
    if (base_vertices.shape != (MESH_POINTS, 3) or iris_vertices.shape != (MESH_WITH_IRIS_POINTS, 3)
            or not np.allclose(iris_vertices[:MESH_POINTS], base_vertices, atol=1e-6)):
        raise ValueError(f"unexpected canonical face geometry in {root}")
    vertices = iris_vertices / 100.0  # cm -> m
    iris_triangles = iris_faces[np.any(iris_faces >= MESH_POINTS, axis=1)]
    # MediaPipe's triangles are counter-clockwise seen from the front; keep them so, but check it (a
    # clockwise file would give inward normals): the summed area vector must point out of the face (+z).
    area = np.cross(vertices[triangles[:, 1]] - vertices[triangles[:, 0]],
                    vertices[triangles[:, 2]] - vertices[triangles[:, 0]]).sum(axis=0)
    if area[2] < 0:
        triangles = triangles[:, ::-1].copy()
    iris_area = np.cross(vertices[iris_triangles[:, 1]] - vertices[iris_triangles[:, 0]],
                         vertices[iris_triangles[:, 2]] - vertices[iris_triangles[:, 0]]).sum(axis=0)
    if iris_area[2] < 0:
        iris_triangles = iris_triangles[:, ::-1].copy()
    normals = _vertex_normals(vertices, np.vstack([triangles, iris_triangles]))
    origin = (vertices[list(RIGHT_EYE_CORNERS)].mean(axis=0) + vertices[list(LEFT_EYE_CORNERS)].mean(axis=0)) / 2
    diameters = [np.linalg.norm(vertices[c + 1] - vertices[c + 3]) for c in (RIGHT_IRIS, LEFT_IRIS)]
    diameters += [np.linalg.norm(vertices[c + 2] - vertices[c + 4]) for c in (RIGHT_IRIS, LEFT_IRIS)]
    face = CanonicalFace(
        vertices=vertices, normals=normals,
        vertices_face=(vertices - origin) @ P_CANONICAL_FROM_FACE,   # row-wise P^T (v - origin)
        normals_face=normals @ P_CANONICAL_FROM_FACE,
        triangles=triangles, iris_triangles=iris_triangles,
        procrustes_weights=_read_procrustes_weights(root / PROCRUSTES_PBTXT),
        origin=origin, iris_diameter_m=float(np.mean(diameters)))
    for value in vars(face).values():
        if isinstance(value, np.ndarray):
            value.setflags(write=False)
    return face


# ----------------------------------------------------------------------------------------------------------
# pose
# ----------------------------------------------------------------------------------------------------------

@dataclass
class HeadPose:
    """A metric head pose in the camera optical frame.

    R_cam_face maps REP-155 face-frame vectors into the camera frame; t_cam_face (metres) is the face frame
    origin (between the eyes) in the camera frame. vertices_cam (N, 3) is the canonical mesh, scaled by
    depth_scale and posed into the camera frame (N = the number of input landmarks, 468 or 478).
    fit_rmse_px: RMS reprojection error (pixels) over the points facing the camera.
    confidence in [0, 1] from the fit error relative to the face size and the landmark score.
    depth_scale: head size relative to the canonical head, from the iris (1.0 = not measured); iris_samples:
    how many images' iris measurements it rests on (a tracked face averages them; 0: the canonical head).
    """

    R_cam_face: np.ndarray
    t_cam_face: np.ndarray
    vertices_cam: np.ndarray
    fit_rmse_px: float
    confidence: float
    depth_scale: float = 1.0
    iris_depth_scale: float = float("nan")   # this image's iris measurement before clamping (nan = none)
    iris_samples: int = 0


def landmark_rows(landmarks_px: np.ndarray) -> np.ndarray:
    """The landmarks as a contiguous float64 copy laid out in rows (2 or 3, N): x, y (and z), N = 468 or 478
    (numpy reduces and combines contiguous rows fast, (N, 3) columns slowly); InputError says what is wrong."""
    try:
        points = np.asarray(landmarks_px, dtype=np.float64)
    except (TypeError, ValueError) as error:
        raise InputError(f"landmarks must be a numeric (468 or 478, 3) array: {error}") from None
    if points.ndim != 2 or points.shape[0] not in (MESH_POINTS, MESH_WITH_IRIS_POINTS) \
            or points.shape[1] not in (2, 3):
        raise InputError(f"landmarks must have shape (468, 3) or (478, 3), got {points.shape}")
    rows = points.T.copy()
    if not all_finite(rows[:2]):
        raise InputError(f"landmarks contain NaN or inf ({int(np.sum(~np.isfinite(rows[:2])))} values)")
    return rows


def all_finite(a) -> bool:
    """np.all(np.isfinite(a)), faster: a sum is finite only if every element is (a NaN or inf makes it
    NaN or inf); only a sum that overflowed needs the element-wise test. A pose's few values are summed
    as floats (numpy's per-call cost would be most of the time)."""
    a = np.asarray(a)
    total = sum(a.ravel().tolist()) if a.size <= 16 else np.add.reduce(a, axis=None)
    return math.isfinite(total) or bool(np.all(np.isfinite(a)))


def undistort_normalised_rows(xy: np.ndarray, camera: CameraModel) -> np.ndarray:
    """Distorted pixel coordinates as (2, N) rows (x, y) -> undistorted normalised image coordinates
    (x/z, y/z) as (2, N) C-contiguous rows (u, v).

    K is inverted here, skew included, and OpenCV undistorts with an identity K: its undistortPoints ignore
    K[0, 1] (a skewed camera with any distortion would be off by degrees)."""
    K = camera.K
    out = np.empty((2, xy.shape[1]))
    out[1] = (xy[1] - K[1, 2]) / K[1, 1]
    out[0] = (xy[0] - K[0, 2] - K[0, 1] * out[1]) / K[0, 0]
    if not camera.has_distortion:
        return out
    src = np.ascontiguousarray(out.T).reshape(-1, 1, 2)
    criteria = (cv2.TERM_CRITERIA_COUNT | cv2.TERM_CRITERIA_EPS, 30, 1e-10)
    if camera.distortion_model == "equidistant":
        out = cv2.fisheye.undistortPoints(src, _EYE3, camera.fisheye_D, criteria=criteria)
    else:
        # cv2.undistortPoints with a criteria iterates to convergence (the default stops after 5 steps,
        # too few for strong barrel distortion at the image edge)
        out = cv2.undistortPoints(src, _EYE3, camera.D, R=None, P=None, criteria=criteria)
    return np.ascontiguousarray(out.reshape(-1, 2).T)


class HeadPoseSolver:
    """`HeadPoseSolver(config).solve(landmarks_px, camera) -> HeadPose` (one per face; thread-compatible:
    it keeps no state between calls)."""

    def __init__(self, config: PoseConfig | None = None, models_dir: str = ""):
        self.config = config if config is not None else PoseConfig()
        self.face = load_canonical_face(models_dir)
        face = self.face
        X = face.vertices_face[:MESH_POINTS]
        self._X = np.ascontiguousarray(X)
        procrustes = face.procrustes_weights / face.procrustes_weights.max()
        self._base_weight = np.maximum(procrustes, BASE_WEIGHT)
        self._basis = np.flatnonzero(face.procrustes_weights > 0)
        self._base_weight_sum = float(self._base_weight.sum())
        self._X1 = np.vstack([X.T, np.ones(MESH_POINTS)])   # (4, m) homogeneous: [R | t] @ X1 = R X + t
        # facing the camera (see _facing), as rows for a product with (c, 1, |c|^2): n.(c - X) from
        # (N, -n.X, 0), |c - X|^2 from (-2 X, |X|^2, 1); laid out (5, 2m) for a fast vector-matrix product
        N = face.normals_face[:MESH_POINTS]
        facing_rows = np.zeros((5, 2 * MESH_POINTS))
        facing_rows[:3, :MESH_POINTS] = N.T
        facing_rows[3, :MESH_POINTS] = -np.sum(N * X, axis=1)
        facing_rows[:3, MESH_POINTS:] = -2.0 * X.T
        facing_rows[3, MESH_POINTS:] = np.sum(X * X, axis=1)
        facing_rows[4, MESH_POINTS:] = 1.0
        self._facing_rows = facing_rows
        self._face_height_m = float(np.ptp(face.vertices[:MESH_POINTS, 1]))

    # -- public --------------------------------------------------------------------------------------------

    def solve(self, landmarks_px: np.ndarray, camera: CameraModel, landmark_score: float = 1.0,
              previous: HeadPose | None = None) -> HeadPose:
        """Metric pose of one face from its landmarks (N x 3 pixels, distorted as in the raw image).

        `previous` (this face's pose in the previous image) replaces the PnP start when given, and carries its
        head size (depth_scale over iris_samples measurements): this image's iris measurement joins their
        running mean, or, not measurable here, the size stands.
        Raises InputError for landmarks of the wrong shape or with NaN/inf values.
        """
        if not isinstance(camera, CameraModel):
            raise InputError(f"camera must be a CameraModel, got {type(camera).__name__}")
        rows = landmark_rows(landmarks_px)      # (2 or 3, n): x, y (and z)
        n = rows.shape[1]
        mesh_xy = rows[:2, :MESH_POINTS]
        if (mesh_xy.max(axis=1) - mesh_xy.min(axis=1)).max() < MIN_FACE_EXTENT_PX:
            raise InputError(f"landmarks span less than {MIN_FACE_EXTENT_PX} pixels: no face to fit")
        uv = undistort_normalised_rows(rows[:2], camera)    # (2, n)
        if not all_finite(uv):
            raise InputError("landmarks cannot be undistorted with this camera model (outside its valid range)")
        R, t, previous_scale, previous_samples = None, None, 1.0, 0
        if previous is not None and previous.t_cam_face is not None and previous.R_cam_face is not None:
            if DEPTH_SCALE_RANGE[0] <= previous.depth_scale <= DEPTH_SCALE_RANGE[1]:   # False for NaN
                previous_scale, previous_samples = previous.depth_scale, max(int(previous.iris_samples), 0)
            t_prev = np.asarray(previous.t_cam_face, dtype=np.float64) / previous_scale
            if all_finite(t_prev) and t_prev[2] > 0:
                R, t = np.asarray(previous.R_cam_face, dtype=np.float64), t_prev
        warm = R is not None
        if not warm:
            R, t = self._initial_pose(np.ascontiguousarray(uv[:, :MESH_POINTS].T))
        z_px = rows[2, :MESH_POINTS] if len(rows) == 3 else None
        R, t, residual_sq, visible = self._refine(uv[:, :MESH_POINTS], R, t, camera.K, z_px, warm)
        if not (all_finite(t) and all_finite(R)):
            raise InputError("head pose fit failed (non-finite result)")

        count = int(np.count_nonzero(visible))
        rmse = math.sqrt(float(np.dot(residual_sq, visible)) / count) if count else math.inf
        # confidence: the landmark score, lowered by the fit error relative to the face's size in pixels
        face_px = float(camera.K[0, 0]) * self._face_height_m / float(t[2])
        score = float(landmark_score)
        score = min(max(score, 0.0), 1.0) if math.isfinite(score) else 0.0
        error = rmse / face_px
        confidence = score / (1.0 + (error / HALF_CONFIDENCE_ERROR) ** 2) if math.isfinite(error) else 0.0

        measured = self.iris_depth_scale(uv.T, R, t, camera) if n == MESH_WITH_IRIS_POINTS else math.nan
        scale, samples = 1.0, 0
        if self.config.iris_scale:
            # a head keeps its size: a tracked face averages its measurements, and keeps the size measured
            # before when its irises are not measurable in this image (turned, blinking, further away), rather
            # than the distance jumping by up to 20% as the measurement comes and goes
            scale, samples = (previous_scale, previous_samples) if warm else (1.0, 0)
            if math.isfinite(measured):
                samples = min(samples + 1, IRIS_MEMORY)
                scale += (min(max(measured, DEPTH_SCALE_RANGE[0]), DEPTH_SCALE_RANGE[1]) - scale) / samples

        t_scaled = t * scale
        pose = np.empty((3, 4))     # scale R X + scale t, one call for all vertices
        pose[:, :3], pose[:, 3] = R * scale, t_scaled
        vertices = cv2.transform(self.face.vertices_face[:n].reshape(n, 1, 3), pose).reshape(n, 3)
        return HeadPose(R_cam_face=R, t_cam_face=t_scaled, vertices_cam=vertices, fit_rmse_px=rmse,
                        confidence=float(confidence), depth_scale=scale, iris_depth_scale=measured,
                        iris_samples=samples)

    def iris_depth_scale(self, uv: np.ndarray, R: np.ndarray, t: np.ndarray, camera: CameraModel) -> float:
        """Head size relative to the canonical head from the two irises, or nan when not measurable.

        For each eye the 5 iris points (undistorted, normalised) are turned into a virtual camera looking
        straight at the iris centre (this removes the off-axis stretch of a wide lens); the iris outline's
        major semi-axis there, from its two measured diameters taken as conjugate diameters of an ellipse,
        is its radius over its distance whatever the gaze or head turn (no foreshortening). The distance
        implied by a config.iris_diameter_m iris, over the distance of the canonical model's iris centre
        under the canonical-size fit (R, t), is the head's size relative to the canonical head (scaling the
        whole scene about the camera leaves the image unchanged). Equivalently: the ratio of the canonical
        model's own projected iris (iris_diameter_m of CanonicalFace) to the measured one, times
        config.iris_diameter_m / CanonicalFace.iris_diameter_m.
        Not measurable: an iris under MIN_IRIS_DIAMETER_PX pixels, the face turned more than
        MAX_IRIS_TURN_DEG from the camera, or the two eyes disagreeing by more than MAX_IRIS_DISAGREEMENT.
        """
        if uv.shape[0] < MESH_WITH_IRIS_POINTS:
            return float("nan")
        t = np.asarray(t, dtype=np.float64)
        tx, ty, tz = t.tolist()
        (r0, _, _), (r1, _, _), (r2, _, _) = np.asarray(R, dtype=np.float64).tolist()   # the face's x axis
        if -(r0 * tx + r1 * ty + r2 * tz) / math.sqrt(tx * tx + ty * ty + tz * tz) \
                < math.cos(math.radians(MAX_IRIS_TURN_DEG)):
            return float("nan")
        focal = math.sqrt(camera.K[0, 0] * camera.K[1, 1])
        eyes = [uv[first:first + 5].tolist() for first in (RIGHT_IRIS, LEFT_IRIS)]
        # Early exit, never changing the result: lengths on the normalised image plane are >= those on the
        # virtual camera's plane below (scale 1/cos, 1/cos^2 off-axis), and an ellipse's major semi-axis is
        # <= sqrt(|u|^2 + |v|^2) of any conjugate pair; so a bound below the limit here is below it there too.
        for _, (x1, y1), (x2, y2), (x3, y3), (x4, y4) in eyes:
            bound_sq = ((x1 - x3) / 2.0) ** 2 + ((y1 - y3) / 2.0) ** 2 + ((x2 - x4) / 2.0) ** 2 \
                + ((y2 - y4) / 2.0) ** 2
            if 2.0 * math.sqrt(bound_sq) * focal < MIN_IRIS_DIAMETER_PX:
                return float("nan")
        semi = [iris_semi_axis(points) for points in eyes]
        if 2.0 * min(semi) * focal < MIN_IRIS_DIAMETER_PX:
            return float("nan")
        centres = (self.face.vertices_face[[RIGHT_IRIS, LEFT_IRIS]] @ R.T + t).tolist()
        scales = [self.config.iris_diameter_m / (2.0 * a) / math.sqrt(x * x + y * y + z * z)
                  for a, (x, y, z) in zip(semi, centres)]
        if abs(scales[0] - scales[1]) > MAX_IRIS_DISAGREEMENT * (scales[0] + scales[1]) / 2.0:
            return float("nan")
        return (scales[0] + scales[1]) / 2.0

    # -- internals -----------------------------------------------------------------------------------------

    def _initial_pose(self, uv: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """SQPnP (globally optimal) on the Procrustes landmarks, EPnP on all points as a fallback."""
        K = np.eye(3)
        for method, index in ((cv2.SOLVEPNP_SQPNP, self._basis), (cv2.SOLVEPNP_EPNP, slice(None))):
            try:
                ok, rvec, tvec = cv2.solvePnP(self._X[index], uv[index], K, None, flags=method)
            except cv2.error:   # e.g. all points in one place
                continue
            if ok and np.all(np.isfinite(tvec)) and np.all(np.isfinite(rvec)) and tvec[2, 0] > 0:
                return cv2.Rodrigues(rvec)[0], tvec.reshape(3)
        raise InputError("no head pose fits these landmarks (degenerate: the points do not span a face)")

    def _refine(self, uv: np.ndarray, R: np.ndarray, t: np.ndarray, K: np.ndarray,
                z_px: np.ndarray | None = None, warm: bool = False):
        """Weighted, robust Gauss-Newton on the reprojection error in normalised coordinates `uv` (2, m), plus
        (when `z_px` is given) MediaPipe's relative depth: z_px / fx should equal (R X)_z / t_z up to an offset.

        Parameters: a left rotation increment w (3), t (3) and, with z, the depth offset (1). Weight per
        point = rigidity (Procrustes basis) x facing the camera x Huber (on the point's whole residual).
        `warm`: R, t are the previous image's pose (tracking), so the looser GN_WARM_TOLERANCE_* stop applies.
        Returns R, t, the squared pixel reprojection residual per point and the mask of points facing the
        camera. Arrays are laid out (row, point) so that every operation runs on contiguous rows; this runs
        once per face and image, so it is written to make few numpy calls (see `_normal_equations`).
        """
        m = self._X1.shape[1]
        fx, fy = float(K[0, 0]), float(K[1, 1])
        use_z = z_px is not None and DEPTH_WEIGHT > 0
        rows = 3 if use_z else 2            # residual rows: u, v (normalised) and, with z, the depth
        observed = np.empty((rows, m))
        observed[:2] = uv
        pixel = np.array([fx * fx, fy * fy, DEPTH_WEIGHT * fx * fx][:rows])  # normalised -> pixels, squared
        R = np.array(R, dtype=np.float64)
        t = np.array(t, dtype=np.float64).reshape(3)
        offset = 0.0
        if use_z:
            observed[2] = z_px * (1.0 / fx)
            # start the depth offset at its best value for the initial pose
            depth_offset = observed[2] - (R[2] @ self._X1[:3]) / t[2]
            offset = float(self._base_weight @ depth_offset) / self._base_weight_sum
        basis = np.empty((_BASIS_ROWS, m))
        basis[_ONE] = 1.0
        residual = np.empty((rows, m))
        converged = False
        for _ in range(GN_ITERATIONS):
            self._project(R, t, basis, jacobian=True)
            np.subtract(basis[_U:_V + 1], observed[:2], out=residual[:2])
            if use_z:   # predicted depth (R X)_z / t_z + offset, with (R X)_z = P_z - t_z
                np.multiply(basis[_PZ], 1.0 / t[2], out=residual[2])
                residual[2] -= observed[2]
                residual[2] += offset - 1.0
            error = np.sqrt(pixel @ (residual * residual))    # the point's whole residual, in pixels
            facing = self._facing(R, t)
            visible = facing > 0.0
            count = np.count_nonzero(visible)
            # Huber, with the scale from the mean error of the visible points (mean |N(0, s)| = 0.8 s);
            # k / max(error, k) = min(1, k / error)
            k = HUBER_K * 1.25 * max(float(np.dot(error, visible)) / max(count, 1), 1e-12)
            weight = self._base_weight * np.minimum(facing, 1.0, out=facing)
            weight *= k / np.maximum(error, k)
            H, g = _normal_equations(_jacobian_coefficients(t, rows), basis, weight, pixel[:, None], residual)
            H.flat[::len(H) + 1] *= 1.0 + 1e-6
            ok, step = cv2.solve(H, -g[:, None], flags=cv2.DECOMP_CHOLESKY)
            if not ok:
                break
            step = step.reshape(-1)
            R = cv2.Rodrigues(step[:3])[0] @ R
            t += step[3:6]
            if use_z:
                offset += step[6]
            if not t[2] > 0:
                raise InputError("head pose fit diverged (face behind the camera)")
            wx, wy, wz, dx, dy, dz = step[:6].tolist()
            turn, move = max(abs(wx), abs(wy), abs(wz)), max(abs(dx), abs(dy), abs(dz))
            converged = (turn < GN_WARM_TOLERANCE_RAD and move < GN_WARM_TOLERANCE_M) if warm \
                else max(turn, move / t[2]) < GN_TOLERANCE
            if converged:
                break
        if not converged:   # the residuals and visibility at the final pose; after a step below the
            # tolerance, those of the last linearisation point serve (the rmse moves by < 0.02 px on real video)
            self._project(R, t, basis, jacobian=False)
            np.subtract(basis[_U:_V + 1], observed[:2], out=residual[:2])
            visible = self._facing(R, t) > 0.0
        reprojection_sq = pixel[:2] @ (residual[:2] * residual[:2])
        return orthonormalised(R), t, reprojection_sq, visible

    def _project(self, R: np.ndarray, t: np.ndarray, basis: np.ndarray, jacobian: bool) -> None:
        """Fill `basis` (_BASIS_ROWS, m; the row of ones already set) with the points P = R X + t in the
        camera frame, iz = 1 / P_z and the projections u = P_x iz, v = P_y iz; with `jacobian`, also the
        products the Jacobian is a combination of (see `_jacobian_coefficients`)."""
        Rt = np.empty((3, 4))
        Rt[:, :3], Rt[:, 3] = R, t
        np.matmul(Rt, self._X1, out=basis[_PX:_PZ + 1])
        np.divide(1.0, basis[_PZ], out=basis[_IZ])
        np.multiply(basis[_PX:_PY + 1], basis[_IZ], out=basis[_U:_V + 1])
        if jacobian:
            u_v = basis[_U:_V + 1]
            np.multiply(basis[_U], basis[_V], out=basis[_UV])
            np.multiply(u_v, u_v, out=basis[_UU:_VV + 1])
            np.multiply(u_v, basis[_IZ], out=basis[_UIZ:_VIZ + 1])

    def _facing(self, R: np.ndarray, t: np.ndarray) -> np.ndarray:
        """Per point, (cos - VISIBLE_COS_LO) / (VISIBLE_COS_HI - VISIBLE_COS_LO) clipped below at 0, where
        cos is between the point's normal and its direction to the camera: > 0 for the points facing the
        camera, >= 1 for those facing it fully.

        Computed in the face frame, where the camera sits at c = -R^T t and the normals need no rotating:
        n.(c - X) and |c - X|^2 are both linear in (c, 1, |c|^2) (the rows of self._facing_rows), so one
        product gives them for all points."""
        m = self._X1.shape[1]
        cx, cy, cz = (-(R.T @ t)).tolist()
        both = np.dot(np.array([cx, cy, cz, 1.0, cx * cx + cy * cy + cz * cz]), self._facing_rows)
        cos = both[:m]
        cos /= np.sqrt(both[m:])
        if VISIBLE_COS_LO:
            cos -= VISIBLE_COS_LO
        cos *= 1.0 / (VISIBLE_COS_HI - VISIBLE_COS_LO)
        return np.maximum(cos, 0.0, out=cos)


def iris_semi_axis(points: list) -> float:
    """Major semi-axis of an iris outline over its distance, whatever the gaze or head turn: from its 5
    undistorted normalised points [(u, v), ...] (centre, then 4 contour points), turned into a virtual
    camera looking straight at the centre (unit focal length), where the two measured diameters are
    conjugate diameters of the outline's ellipse."""
    rays = []
    for u, v in points:
        norm = math.sqrt(u * u + v * v + 1.0)
        rays.append((u / norm, v / norm, 1.0 / norm))
    cx, cy, cz = rays[0]
    # gnomonic projection onto the plane through the centre ray's tip, perpendicular to it: the image
    # plane of the virtual camera
    tangent = []
    for x, y, z in rays[1:]:
        d = x * cx + y * cy + z * cz
        tangent.append((x / d - cx, y / d - cy, z / d - cz))
    (ax, ay, az), (bx, by, bz) = ([(p - q) / 2.0 for p, q in zip(tangent[k], tangent[k + 2])] for k in (0, 1))
    total = ax * ax + ay * ay + az * az + bx * bx + by * by + bz * bz
    # a, b lie in one plane: |a x b| is the area of their parallelogram
    cross_sq = (ay * bz - az * by) ** 2 + (az * bx - ax * bz) ** 2 + (ax * by - ay * bx) ** 2
    return math.sqrt((total + math.sqrt(max(total * total - 4.0 * cross_sq, 0.0))) / 2.0)


def orthonormalised(R: np.ndarray) -> np.ndarray:
    """The rotation nearest to R (products of rotations drift from orthonormal by ~1e-16 per product).
    When R is that close, one Newton step of the polar decomposition gives it to rounding at under half
    the cost of the SVD used otherwise."""
    E = R.T @ R
    deviation = (E - _EYE3).reshape(9)
    if deviation @ deviation < 1e-20:     # |R^T R - I| < 1e-10: the step leaves ~ its square
        return R @ (1.5 * _EYE3 - 0.5 * E)
    U, _, Vt = np.linalg.svd(R)
    return U @ Vt


_EYE3 = np.eye(3)
_EYE3.setflags(write=False)

# Rows of HeadPoseSolver._project's basis: the Jacobian of the fit is a combination of these, with
# coefficients that depend only on t (_jacobian_coefficients).
_ONE, _U, _V, _UV, _UU, _VV, _IZ, _UIZ, _VIZ, _PX, _PY, _PZ = range(12)
_BASIS_ROWS = 12


def _jacobian_coefficients(t: np.ndarray, rows: int) -> np.ndarray:
    """C (parameter, residual row, basis row): the transposed Jacobian of the fit is C @ basis.

    With P = exp([w]x) Xr + t, Xr = R X, u = P_x / P_z (v alike): du/dw = Xr x (iz, 0, -u iz),
    du/dt = (iz, 0, -u iz); writing x iz = u - t_x iz (y, z alike) makes every entry linear in the basis
    (1, u, v, uv, u^2, v^2, iz, u iz, v iz) with coefficients from t. The depth row (Xr_z / t_z + offset):
    d/dw = (Xr_y, -Xr_x, 0) / t_z, d/dt_z = -Xr_z / t_z^2, d/doffset = 1, linear in (1, P) as Xr = P - t.
    """
    tx, ty, tz = t.tolist()
    C = np.zeros((7 if rows == 3 else 6, rows, _BASIS_ROWS))
    # u: -y iz u, z iz + x iz u, -y iz, iz, 0, -u iz (x, y, z: Xr)
    C[0, 0, _UV], C[0, 0, _UIZ] = -1.0, ty
    C[1, 0, _ONE], C[1, 0, _UU], C[1, 0, _IZ], C[1, 0, _UIZ] = 1.0, 1.0, -tz, -tx
    C[2, 0, _V], C[2, 0, _IZ] = -1.0, ty
    C[3, 0, _IZ] = 1.0
    C[5, 0, _UIZ] = -1.0
    # v: -y iz v - z iz, x iz v, x iz, 0, iz, -v iz
    C[0, 1, _ONE], C[0, 1, _VV], C[0, 1, _IZ], C[0, 1, _VIZ] = -1.0, -1.0, tz, ty
    C[1, 1, _UV], C[1, 1, _VIZ] = 1.0, -tx
    C[2, 1, _U], C[2, 1, _IZ] = 1.0, -tx
    C[4, 1, _IZ] = 1.0
    C[5, 1, _VIZ] = -1.0
    if rows == 3:   # depth: y / t_z, -x / t_z, 0, 0, 0, -z / t_z^2, 1
        inv_tz = 1.0 / tz
        C[0, 2, _PY], C[0, 2, _ONE] = inv_tz, -ty * inv_tz
        C[1, 2, _PX], C[1, 2, _ONE] = -inv_tz, tx * inv_tz
        C[5, 2, _PZ], C[5, 2, _ONE] = -inv_tz * inv_tz, inv_tz
        C[6, 2, _ONE] = 1.0
    return C


def _normal_equations(C: np.ndarray, basis: np.ndarray, weight: np.ndarray, pixel: np.ndarray,
                      residual: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """H = J^T W J and g = J^T W r of the fit, J^T = C @ basis (per residual row b), W = weight x pixel[b].

    Formed on the basis instead of J: H = sum_b pixel[b] C_b G C_b^T with G = basis diag(weight) basis^T
    (12 x 12), and g = sum_b pixel[b] C_b (basis diag(weight) r_b): a few small products instead of
    building and weighting the (parameters x rows x points) Jacobian."""
    n, rows, k = C.shape
    weighted = basis * weight
    G = weighted @ basis.T
    Cp = C * pixel                                              # pixel: (rows, 1)
    H = (Cp.reshape(n * rows, k) @ G).reshape(n, rows * k) @ C.reshape(n, rows * k).T
    g = Cp.reshape(n, rows * k) @ (residual @ weighted.T).reshape(rows * k)
    return H, g
