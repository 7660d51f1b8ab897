"""face3d_ros.core.geometry: canonical face, metric head pose, conventions, 68-point subset."""
from __future__ import annotations

import math
from pathlib import Path

import cv2
import numpy as np
import pytest

from face3d_ros.core import geometry as G
from face3d_ros.core.config import PoseConfig
from face3d_ros.core.types import CameraModel, InputError

SHARED = Path(__file__).resolve().parents[2] / "shared" / "data"
AFLW = SHARED / "aflw2000_prnet16"

PLUMB_BOB_D = np.array([-0.28, 0.09, 0.0012, -0.0008, -0.012])        # a real-looking 1280x720 webcam lens
RATIONAL_D = np.array([0.35, -0.1, 0.001, 0.0005, 0.02, 0.7, -0.05, 0.06])
EQUIDISTANT_D = np.array([0.05, -0.02, 0.004, -0.001])


@pytest.fixture(scope="module")
def face() -> G.CanonicalFace:
    return G.load_canonical_face()


def camera(distortion_model: str = "plumb_bob", D=None, fx: float = 900.0,
           size: tuple[int, int] = (1280, 720)) -> CameraModel:
    w, h = size
    K = np.array([[fx, 0.0, w / 2 - 3.5], [0.0, fx * 1.002, h / 2 + 2.25], [0.0, 0.0, 1.0]])
    return CameraModel(K=K, D=np.zeros(0) if D is None else np.asarray(D, float),
                       distortion_model=distortion_model, width=w, height=h)


def project(points_cam: np.ndarray, cam: CameraModel) -> np.ndarray:
    """Camera-frame points -> distorted pixels, as the raw image shows them (skew included, which OpenCV's
    projectPoints leaves out: the distorted normalised point, then K)."""
    zero = np.zeros(3)
    if cam.distortion_model == "equidistant":
        xy, _ = cv2.fisheye.projectPoints(points_cam.reshape(-1, 1, 3), zero, zero, np.eye(3),
                                          cam.D if cam.D.size else np.zeros(4))
    else:
        xy, _ = cv2.projectPoints(points_cam, zero, zero, np.eye(3), cam.D if cam.D.size else None)
    xy = xy.reshape(-1, 2)
    K = cam.K
    return np.column_stack([K[0, 0] * xy[:, 0] + K[0, 1] * xy[:, 1] + K[0, 2], K[1, 1] * xy[:, 1] + K[1, 2]])


def synthetic_landmarks(face: G.CanonicalFace, R: np.ndarray, t: np.ndarray, cam: CameraModel,
                        head_scale: float = 1.0, iris_diameter_m: float | None = None,
                        n: int = 478, gaze: np.ndarray | None = None) -> np.ndarray:
    """MediaPipe-like landmarks of the canonical head (scaled by head_scale about the face origin) at pose
    (R, t): x, y = distorted pixels; z = relative depth in the same pixel scale (smaller = closer).
    With iris_diameter_m the irises get that diameter whatever the head scale (as real irises do); `gaze`
    (3x3, face frame) turns the iris discs about their centres."""
    X = face.vertices_face * head_scale
    if iris_diameter_m is not None:
        for c in (G.RIGHT_IRIS, G.LEFT_IRIS):
            outline = face.vertices_face[c + 1:c + 5] - face.vertices_face[c]
            if gaze is not None:
                outline = outline @ gaze.T
            X[c + 1:c + 5] = X[c] + outline * (iris_diameter_m / face.iris_diameter_m)
    P = X[:n] @ R.T + t
    z = (P[:, 2] - t[2]) * cam.K[0, 0] / t[2]
    return np.column_stack([project(P, cam), z])


def angle_deg(Ra: np.ndarray, Rb: np.ndarray) -> float:
    return math.degrees(np.linalg.norm(cv2.Rodrigues(Ra.T @ Rb)[0]))


def random_poses(seed: int, count: int, max_deg=(60.0, 40.0, 40.0), distance=(0.4, 3.0)):
    rng = np.random.default_rng(seed)
    for _ in range(count):
        yaw, pitch, roll = (rng.uniform(-m, m) for m in max_deg)
        d = rng.uniform(*distance)
        t = np.array([rng.uniform(-0.25, 0.25) * d, rng.uniform(-0.15, 0.15) * d, d])
        yield (yaw, pitch, roll), G.rotation_from_yaw_pitch_roll_deg(yaw, pitch, roll), t


# ---------------------------------------------------------------------------------------------- canonical face

def test_canonical_face_is_metric_and_complete(face):
    assert face.vertices.shape == (478, 3) and face.vertices_face.shape == (478, 3)
    assert face.normals.shape == (478, 3)
    assert face.triangles.shape == (898, 3) and face.triangles.min() == 0 and face.triangles.max() == 467
    assert face.iris_triangles.shape == (8, 3) and face.iris_triangles.min() >= 468
    assert face.procrustes_weights.shape == (468,) and np.count_nonzero(face.procrustes_weights) == 33
    # metric facts of MediaPipe's model (shared/notes/models.md), now in metres
    assert np.linalg.norm(face.vertices[33] - face.vertices[263]) == pytest.approx(0.0889, abs=2e-4)
    assert np.linalg.norm(face.vertices[468] - face.vertices[473]) == pytest.approx(0.0636, abs=2e-4)
    assert np.linalg.norm(face.vertices[10] - face.vertices[152]) == pytest.approx(0.1767, abs=2e-4)
    assert face.iris_diameter_m == pytest.approx(0.012, abs=5e-4)
    # loaded once
    assert G.load_canonical_face() is face


def test_canonical_axes_and_face_frame(face):
    v = face.vertices_face   # REP-155: x out of the face, y the person's left, z up; origin between the eyes
    assert v[263, 1] > 0.03 and v[33, 1] < -0.03          # left eye corner on +y, right one on -y
    assert v[468, 1] < 0 < v[473, 1]                      # right iris beside 33, left iris beside 263
    assert v[1, 0] > 0.03                                 # nose tip in front of the eyes
    assert v[10, 2] > 0.05 and v[152, 2] < -0.08          # forehead up, chin down
    eye_centres = (v[[33, 133]].mean(axis=0) + v[[263, 362]].mean(axis=0)) / 2
    np.testing.assert_allclose(eye_centres, 0.0, atol=1e-12)
    np.testing.assert_allclose(face.vertices_face @ G.P_CANONICAL_FROM_FACE.T + face.origin, face.vertices,
                               atol=1e-12)


def test_triangles_counter_clockwise_from_the_front(face):
    v = face.vertices_face
    for triangles in (face.triangles, face.iris_triangles):
        a, b, c = (v[triangles[:, k]] for k in range(3))
        normals = np.cross(b - a, c - a)
        # seen from in front (from +x), counter-clockwise triangles have normals toward +x ...
        assert np.mean(normals[:, 0] > 0) > 0.95
        # ... and away from the inside of the head (a point well behind the face); the few exceptions are
        # the folds at the corners of the lips
        outward = np.einsum("ij,ij->i", normals, (a + b + c) / 3 - np.array([-0.08, 0.0, 0.0]))
        assert np.mean(outward > 0) > 0.98
        # one consistent orientation: neighbouring triangles run their shared edge in opposite directions
        edges = {(int(t[i]), int(t[(i + 1) % 3])) for t in triangles for i in range(3)}
        assert len(edges) == 3 * len(triangles)
    assert face.normals_face[1, 0] > 0.9                    # nose tip normal: out of the face
    assert face.normals_face[234, 1] < -0.5                 # right cheek edge: toward the person's right
    np.testing.assert_allclose(np.linalg.norm(face.normals, axis=1), 1.0, atol=1e-9)


# ---------------------------------------------------------------------------------------------- conventions

def test_frontal_face_convention():
    R = G.rotation_from_yaw_pitch_roll_deg(0, 0, 0)
    np.testing.assert_allclose(R, [[0, 1, 0], [0, 0, -1], [-1, 0, 0]], atol=1e-12)
    np.testing.assert_allclose(R, G.R_CAM_FACE_FRONTAL)
    np.testing.assert_allclose(G.yaw_pitch_roll_deg(G.R_CAM_FACE_FRONTAL), 0.0, atol=1e-12)
    np.testing.assert_allclose(G.quaternion_xyzw(np.eye(3)), [0, 0, 0, 1])
    q = G.quaternion_xyzw(G.R_CAM_FACE_FRONTAL)
    assert np.linalg.norm(q) == pytest.approx(1.0) and q[3] >= 0
    # w = sqrt(1 + trace) / 2, x = (R21 - R12) / 4w, y = (R02 - R20) / 4w, z = (R10 - R01) / 4w
    np.testing.assert_allclose(q, [0.5, 0.5, -0.5, 0.5], atol=1e-12)


def _camera_rotation(axis: str, degrees: float) -> np.ndarray:
    return cv2.Rodrigues(np.radians(degrees) * np.eye(3)["xyz".index(axis)])[0]


def test_sign_conventions():
    # the face turned toward the image's left: its forward axis (face x) gets a negative camera x
    turned_left = _camera_rotation("y", 30) @ G.R_CAM_FACE_FRONTAL
    assert turned_left[0, 0] < 0
    yaw, pitch, roll = G.yaw_pitch_roll_deg(turned_left)
    assert yaw == pytest.approx(30) and pitch == pytest.approx(0, abs=1e-9) and roll == pytest.approx(0, abs=1e-9)
    # looking up: face x gets a negative camera y (image up)
    looking_up = _camera_rotation("x", -20) @ G.R_CAM_FACE_FRONTAL
    assert looking_up[1, 0] < 0
    assert G.yaw_pitch_roll_deg(looking_up)[1] == pytest.approx(20)
    # top of the head toward the image's right: face z gets a positive camera x
    tilted_right = _camera_rotation("z", 15) @ G.R_CAM_FACE_FRONTAL
    assert tilted_right[0, 2] > 0
    assert G.yaw_pitch_roll_deg(tilted_right)[2] == pytest.approx(15)


def test_line_of_sight_angles():
    # on the optical axis both conventions agree
    R = G.rotation_from_yaw_pitch_roll_deg(25, -10, 5)
    np.testing.assert_allclose(G.yaw_pitch_roll_line_of_sight_deg(R, [0, 0, 0.8]), G.yaw_pitch_roll_deg(R),
                               atol=1e-9)
    # a face 20 deg to the image's right of the optical axis, looking straight into the camera: its
    # camera-relative yaw is 20 deg (turned toward the image's left), its line-of-sight yaw 0
    t = np.array([math.tan(math.radians(20)), 0.0, 1.0])
    facing_camera = G.rotation_to_line_of_sight(t) @ G.R_CAM_FACE_FRONTAL
    np.testing.assert_allclose(facing_camera[:, 0], -t / np.linalg.norm(t), atol=1e-12)   # face x toward camera
    assert G.yaw_pitch_roll_deg(facing_camera)[0] == pytest.approx(20)
    np.testing.assert_allclose(G.yaw_pitch_roll_line_of_sight_deg(facing_camera, t), 0.0, atol=1e-9)
    # above the image centre, looking into the camera: looks down relative to the optical axis
    t = np.array([0.0, -math.tan(math.radians(15)), 1.0])
    facing_camera = G.rotation_to_line_of_sight(t) @ G.R_CAM_FACE_FRONTAL
    assert G.yaw_pitch_roll_deg(facing_camera)[1] == pytest.approx(-15)
    np.testing.assert_allclose(G.yaw_pitch_roll_line_of_sight_deg(facing_camera, t), 0.0, atol=1e-9)
    for t in ([0.3, -0.2, 0.5], [0, 0, 2.0], [1e-9, 0, 1.0]):
        R_los = G.rotation_to_line_of_sight(t)
        np.testing.assert_allclose(R_los @ R_los.T, np.eye(3), atol=1e-12)
        np.testing.assert_allclose(R_los[:, 2], np.asarray(t) / np.linalg.norm(t), atol=1e-12)


def test_mesh_mirror_indices(face):
    mirror = G.mesh_mirror_indices()
    assert sorted(mirror) == list(range(G.MESH_POINTS))
    np.testing.assert_array_equal(mirror[mirror], np.arange(G.MESH_POINTS))
    assert mirror[G.RIGHT_EYE_CORNERS[0]] == G.LEFT_EYE_CORNERS[0]
    assert mirror[G.RIGHT_EYE_CORNERS[1]] == G.LEFT_EYE_CORNERS[1]
    assert mirror[1] == 1 and mirror[152] == 152                      # nose tip and chin: on the midline
    V = face.vertices[:G.MESH_POINTS]
    np.testing.assert_allclose(V[mirror] * [-1, 1, 1], V, atol=1e-6)
    # the 68-point subset maps onto itself (iBUG's own left-right pairs)
    assert set(mirror[G.LANDMARKS_68]) == set(G.LANDMARKS_68)
    # mirrored synthetic landmarks, re-indexed, give the mirrored pose: yaw and roll change sign
    cam = CameraModel(K=np.array([[900.0, 0, 640], [0, 900.0, 360], [0, 0, 1]]), D=np.zeros(0),
                      distortion_model="plumb_bob", width=1280, height=720)
    R, t = G.rotation_from_yaw_pitch_roll_deg(40, 10, -8), np.array([0.0, 0.0, 0.7])
    points = synthetic_landmarks(face, R, t, cam, n=G.MESH_POINTS)
    mirrored = points.copy()
    mirrored[:, 0] = 2 * cam.K[0, 2] - mirrored[:, 0]
    pose = G.HeadPoseSolver(PoseConfig(iris_scale=False)).solve(mirrored[mirror], cam)
    np.testing.assert_allclose(G.yaw_pitch_roll_deg(pose.R_cam_face), [-40, 10, 8], atol=0.05)


def test_yaw_pitch_roll_round_trip():
    rng = np.random.default_rng(7)
    for _ in range(200):
        angles = rng.uniform([-89, -89, -179], [89, 89, 179])
        R = G.rotation_from_yaw_pitch_roll_deg(*angles)
        np.testing.assert_allclose(R @ R.T, np.eye(3), atol=1e-12)
        assert np.linalg.det(R) == pytest.approx(1.0)
        np.testing.assert_allclose(G.yaw_pitch_roll_deg(R), angles, atol=1e-9)


# ---------------------------------------------------------------------------------------------- pose

@pytest.mark.parametrize("seed", [0, 1, 2])
def test_round_trip_recovers_pose(face, seed):
    cam = camera()
    solver = G.HeadPoseSolver(PoseConfig(iris_scale=False))
    for angles, R, t in random_poses(seed, 25):
        pose = solver.solve(synthetic_landmarks(face, R, t, cam), cam)
        assert angle_deg(R, pose.R_cam_face) < 0.5, angles
        assert np.linalg.norm(pose.t_cam_face - t) < 1e-3, (angles, t)
        np.testing.assert_allclose(G.yaw_pitch_roll_deg(pose.R_cam_face), angles, atol=0.5)
        assert pose.depth_scale == 1.0
        assert pose.fit_rmse_px < 0.01
        assert 0.99 < pose.confidence <= 1.0
        assert pose.vertices_cam.shape == (478, 3)
        np.testing.assert_allclose(pose.vertices_cam, face.vertices_face @ R.T + t, atol=2e-3)


@pytest.mark.parametrize("angles", [(60, 0, 0), (-60, 0, 0), (0, 45, 0), (0, -45, 0), (0, 0, 60), (-45, 30, -30)])
def test_round_trip_extreme_poses_and_distances(face, angles):
    cam = camera()
    solver = G.HeadPoseSolver(PoseConfig(iris_scale=False))
    R = G.rotation_from_yaw_pitch_roll_deg(*angles)
    for t in ([0.0, 0.0, 0.4], [0.12, -0.05, 0.6], [-0.6, 0.3, 3.0]):
        t = np.array(t)
        pose = solver.solve(synthetic_landmarks(face, R, t, cam), cam)
        assert angle_deg(R, pose.R_cam_face) < 0.5
        assert np.linalg.norm(pose.t_cam_face - t) < 1e-3


def test_mesh_only_input_and_2d_input(face):
    cam = camera()
    solver = G.HeadPoseSolver(PoseConfig())
    R, t = G.rotation_from_yaw_pitch_roll_deg(20, -10, 5), np.array([0.05, 0.02, 0.8])
    landmarks = synthetic_landmarks(face, R, t, cam, n=468)
    for points in (landmarks, landmarks[:, :2]):      # without z the fit is 2D only
        pose = solver.solve(points, cam)
        assert pose.vertices_cam.shape == (468, 3)
        assert angle_deg(R, pose.R_cam_face) < 0.5 and np.linalg.norm(pose.t_cam_face - t) < 1e-3
        assert pose.depth_scale == 1.0                 # no iris: no scale


def test_previous_pose_start_gives_the_same_answer(face):
    cam = camera()
    solver = G.HeadPoseSolver(PoseConfig(iris_scale=False))
    R, t = G.rotation_from_yaw_pitch_roll_deg(-35, 10, 8), np.array([-0.1, 0.05, 1.2])
    landmarks = synthetic_landmarks(face, R, t, cam)
    cold = solver.solve(landmarks, cam)
    previous = solver.solve(synthetic_landmarks(face, G.rotation_from_yaw_pitch_roll_deg(-30, 8, 6), t + 0.02,
                                                cam), cam)
    warm = solver.solve(landmarks, cam, previous=previous)
    assert angle_deg(cold.R_cam_face, warm.R_cam_face) < 1e-3
    np.testing.assert_allclose(warm.t_cam_face, cold.t_cam_face, atol=1e-5)


def test_gauss_newton_normal_equations_match_finite_differences():
    """The fit forms its normal equations from a basis of per-point products (G._jacobian_coefficients,
    G._normal_equations) instead of the Jacobian itself: they must equal J^T W J and J^T W r with J the
    numerical Jacobian of the residuals (u, v, depth) in the fit's parameters (w, t, offset)."""
    solver = G.HeadPoseSolver()
    X = solver._X1[:3].T
    m = len(X)
    R, t = G.rotation_from_yaw_pitch_roll_deg(25, -15, 10), np.array([0.08, -0.05, 0.7])

    def predicted(params):   # u, v rows and the depth row (R X)_z / t_z + offset, as in the fit
        Rp, tp = cv2.Rodrigues(params[:3])[0] @ R, t + params[3:6]
        P = X @ Rp.T + tp
        return np.concatenate([P[:, 0] / P[:, 2], P[:, 1] / P[:, 2], (P[:, 2] - tp[2]) / tp[2] + params[6]])

    eps = 1e-6
    J = np.column_stack([(predicted(step) - predicted(-step)) / (2 * eps) for step in np.eye(7) * eps])
    basis = np.empty((G._BASIS_ROWS, m))
    basis[G._ONE] = 1.0
    solver._project(R, t, basis, jacobian=True)
    C = G._jacobian_coefficients(t, 3)
    np.testing.assert_allclose((C.reshape(-1, G._BASIS_ROWS) @ basis).reshape(7, 3 * m), J.T, atol=1e-8)

    rng = np.random.default_rng(5)
    weight, residual = rng.uniform(0.0, 1.0, m), rng.normal(0.0, 1e-3, (3, m))
    pixel = np.array([[900.0 ** 2], [905.0 ** 2], [0.5 * 900.0 ** 2]])
    H, g = G._normal_equations(C, basis, weight, pixel, residual)
    W = (weight * pixel).reshape(-1)
    H_fd = (J.T * W) @ J
    np.testing.assert_allclose(H, H_fd, rtol=1e-6, atol=1e-6 * np.abs(H_fd).max())
    g_fd = (J.T * W) @ residual.reshape(-1)
    np.testing.assert_allclose(g, g_fd, rtol=1e-6, atol=1e-6 * np.abs(g_fd).max())
    # 2D landmarks only: the same without the depth row and offset
    H2, g2 = G._normal_equations(G._jacobian_coefficients(t, 2), basis, weight, pixel[:2], residual[:2])
    J2, W2 = J[:2 * m, :6], W[:2 * m]
    np.testing.assert_allclose(H2, (J2.T * W2) @ J2, rtol=1e-6, atol=1e-6 * np.abs(H_fd).max())
    np.testing.assert_allclose(g2, (J2.T * W2) @ residual[:2].reshape(-1), rtol=1e-6,
                               atol=1e-6 * np.abs(g_fd).max())


def test_iris_scale_recovers_head_size(face):
    cam = camera(fx=1400.0, size=(1920, 1080))
    solver = G.HeadPoseSolver(PoseConfig(iris_scale=True, iris_diameter_m=0.0117))
    for head_scale in (1.1, 0.92):
        for angles, R, t in random_poses(3, 15, max_deg=(18, 12, 20), distance=(0.4, 1.0)):
            landmarks = synthetic_landmarks(face, R, t, cam, head_scale=head_scale, iris_diameter_m=0.0117)
            pose = solver.solve(landmarks, cam)
            assert pose.depth_scale == pytest.approx(head_scale, rel=0.03), angles
            assert np.linalg.norm(pose.t_cam_face - t) < 0.03 * t[2]
            assert angle_deg(R, pose.R_cam_face) < 0.5
            # the mesh is the scaled head: the posed eye corners lie where the synthetic ones were
            truth = face.vertices_face[[33, 263]] * head_scale @ R.T + t
            assert np.abs(pose.vertices_cam[[33, 263]] - truth).max() < 0.03 * t[2]


def test_iris_scale_ignores_gaze_and_lens_position(face):
    """The iris outline's major axis does not shrink when the eyes look aside, nor grow off the lens axis."""
    cam = camera(fx=700.0, size=(1280, 720))              # wide lens: 85 deg across
    solver = G.HeadPoseSolver(PoseConfig())
    R = G.rotation_from_yaw_pitch_roll_deg(10, -5, 3)
    for gaze_deg in ((25, 0), (0, 20), (-20, -15)):
        gaze = cv2.Rodrigues(np.radians([0.0, gaze_deg[1], gaze_deg[0]]))[0]   # about face y (pitch), z (yaw)
        for t in ([0.0, 0.0, 0.45], [0.25, 0.12, 0.5]):
            t = np.array(t)
            landmarks = synthetic_landmarks(face, R, t, cam, 1.05, 0.0117, gaze=gaze)
            assert solver.solve(landmarks, cam).depth_scale == pytest.approx(1.05, rel=0.02), (gaze_deg, t)


def test_iris_scale_switch_clamp_and_gates(face):
    cam = camera(fx=1400.0, size=(1920, 1080))
    R, t = G.rotation_from_yaw_pitch_roll_deg(10, 5, 0), np.array([0.02, 0.01, 0.6])
    landmarks = synthetic_landmarks(face, R, t, cam, head_scale=1.1, iris_diameter_m=0.0117)
    off = G.HeadPoseSolver(PoseConfig(iris_scale=False)).solve(landmarks, cam)
    assert off.depth_scale == 1.0
    assert off.iris_depth_scale == pytest.approx(1.1, rel=0.03)   # measured, not applied
    np.testing.assert_allclose(off.t_cam_face, t / 1.1, rtol=1e-4)   # the canonical-size answer
    # an implausible head (an iris far too small for the face) is clamped to the human range
    huge = synthetic_landmarks(face, R, t, cam, head_scale=1.5, iris_diameter_m=0.0117)
    assert G.HeadPoseSolver(PoseConfig()).solve(huge, cam).depth_scale == pytest.approx(G.DEPTH_SCALE_RANGE[1])
    # not measurable: the face turned too far, irises too small, or the eyes disagreeing -> 1.0
    solver = G.HeadPoseSolver(PoseConfig())
    turned = synthetic_landmarks(face, G.rotation_from_yaw_pitch_roll_deg(55, 0, 0), t, cam, 1.1, 0.0117)
    assert solver.solve(turned, cam).depth_scale == 1.0
    far = synthetic_landmarks(face, R, np.array([0.0, 0.0, 3.0]), cam, 1.1, 0.0117)   # ~5 px irises
    assert solver.solve(far, cam).depth_scale == 1.0
    odd = landmarks.copy()
    centre = odd[G.LEFT_IRIS, :2]
    odd[G.LEFT_IRIS + 1:G.LEFT_IRIS + 5, :2] = centre + 1.4 * (odd[G.LEFT_IRIS + 1:G.LEFT_IRIS + 5, :2] - centre)
    assert solver.solve(odd, cam).depth_scale == 1.0


@pytest.mark.parametrize("model,D", [("plumb_bob", PLUMB_BOB_D), ("rational_polynomial", RATIONAL_D),
                                     ("equidistant", EQUIDISTANT_D)])
def test_distortion_is_removed(face, model, D):
    pinhole, distorted = camera(), camera(model, D)
    solver = G.HeadPoseSolver(PoseConfig(iris_scale=False))
    shifts = []
    for angles, R, t in random_poses(11, 12, distance=(0.4, 2.0)):
        t[:2] = t[:2] * 1.6                               # off centre, where the lens distorts most
        raw = synthetic_landmarks(face, R, t, distorted)
        shifts.append(np.abs(raw[:, :2] - synthetic_landmarks(face, R, t, pinhole)[:, :2]).max())
        ideal = solver.solve(synthetic_landmarks(face, R, t, pinhole), pinhole)
        pose = solver.solve(raw, distorted)
        assert angle_deg(ideal.R_cam_face, pose.R_cam_face) < 0.1, angles
        assert np.linalg.norm(ideal.t_cam_face - pose.t_cam_face) < 1e-3
        assert pose.fit_rmse_px < 0.05
    assert max(shifts) > 10.0                               # the lens really moved the points


def test_skewed_camera_with_and_without_distortion(face):
    """K's skew is honoured whether or not the lens distorts (OpenCV's undistortPoints alone drop K[0, 1]:
    1.5 deg off with any distortion when this was found)."""
    solver = G.HeadPoseSolver(PoseConfig(iris_scale=False))
    R, t = G.rotation_from_yaw_pitch_roll_deg(20, -10, 5), np.array([0.15, -0.05, 0.8])
    for model, D in (("plumb_bob", np.zeros(0)), ("plumb_bob", np.array([1e-9, 0, 0, 0, 0])),
                     ("plumb_bob", PLUMB_BOB_D), ("equidistant", EQUIDISTANT_D)):
        cam = camera(model, D)
        cam = CameraModel(K=cam.K + np.array([[0, 40.0, 0], [0, 0, 0], [0, 0, 0]]), D=cam.D,
                          distortion_model=model, width=cam.width, height=cam.height)
        pose = solver.solve(synthetic_landmarks(face, R, t, cam), cam)
        assert angle_deg(R, pose.R_cam_face) < 0.01, (model, D)
        assert np.linalg.norm(pose.t_cam_face - t) < 1e-4, (model, D)


def test_equidistant_lens_with_zero_coefficients_is_still_a_fisheye(face):
    """k1..k4 = 0 (or none) is the ideal f-theta fisheye, not a pinhole: 40 deg off axis the two differ by
    ~30 cm in where the face is."""
    solver = G.HeadPoseSolver(PoseConfig(iris_scale=False))
    R, t = G.R_CAM_FACE_FRONTAL, np.array([0.839, 0.0, 1.0])
    for D in (np.zeros(4), np.zeros(0)):
        fisheye = camera("equidistant", D, fx=500.0)
        pose = solver.solve(synthetic_landmarks(face, R, t, fisheye), fisheye)
        assert np.linalg.norm(pose.t_cam_face - t) < 1e-4 and angle_deg(R, pose.R_cam_face) < 0.01


def test_camera_matrix_must_be_upper_triangular_with_a_unit_corner():
    K = camera().K
    shear, tilt = np.zeros((3, 3)), np.zeros((3, 3))
    shear[1, 0], tilt[2, 1] = 3.0, 1e-3
    for bad in (0.5 * K, K + shear, K + tilt):
        with pytest.raises(InputError, match="must be"):
            CameraModel(K=bad)


def test_tracked_face_keeps_its_measured_head_size_when_the_irises_are_not_measurable(face):
    """A head keeps its size: with the previous image's pose given (tracking), a face whose irises cannot be
    measured in this image (turned away) keeps the head size measured before instead of the canonical one."""
    cam = camera(fx=1400.0, size=(1920, 1080))
    solver = G.HeadPoseSolver(PoseConfig())
    t = np.array([0.02, 0.01, 0.6])
    seen = solver.solve(synthetic_landmarks(face, G.rotation_from_yaw_pitch_roll_deg(10, 5, 0), t, cam, 1.1, 0.0117),
                        cam)
    assert seen.depth_scale == pytest.approx(1.1, rel=0.03)
    turned = synthetic_landmarks(face, G.rotation_from_yaw_pitch_roll_deg(45, 5, 0), t, cam, 1.1, 0.0117)
    alone = solver.solve(turned, cam)
    assert math.isnan(alone.iris_depth_scale) and alone.depth_scale == 1.0      # gated: the canonical head
    tracked = solver.solve(turned, cam, previous=seen)
    assert tracked.depth_scale == seen.depth_scale
    np.testing.assert_allclose(tracked.t_cam_face, alone.t_cam_face * seen.depth_scale, atol=1e-4)  # 0.1 mm
    assert np.linalg.norm(tracked.t_cam_face - t) < 0.03 * t[2]                 # where the head really is
    off = G.HeadPoseSolver(PoseConfig(iris_scale=False)).solve(turned, cam, previous=seen)
    assert off.depth_scale == 1.0                                               # iris_scale off: never applied


def test_tracked_face_averages_its_iris_measurements(face):
    """One image's iris measurement varies by 5-10% on real video; a tracked head's size is the running mean of
    its measurements (the last IRIS_MEMORY of them weighing most), so its distance does not jitter with them."""
    cam = camera(fx=1400.0, size=(1920, 1080))
    solver = G.HeadPoseSolver(PoseConfig())
    R, t = G.rotation_from_yaw_pitch_roll_deg(10, 5, 0), np.array([0.02, 0.01, 0.6])
    pose, measured = None, []
    for k, head in enumerate((1.12, 1.0, 1.06, 0.95, 1.1)):
        pose = solver.solve(synthetic_landmarks(face, R, t, cam, head, 0.0117), cam, previous=pose)
        measured.append(pose.iris_depth_scale)
        assert pose.iris_samples == k + 1
        assert pose.depth_scale == pytest.approx(np.mean(measured), rel=1e-9)
    for _ in range(2 * G.IRIS_MEMORY):
        pose = solver.solve(synthetic_landmarks(face, R, t, cam, 1.1, 0.0117), cam, previous=pose)
    assert pose.iris_samples == G.IRIS_MEMORY
    assert pose.depth_scale == pytest.approx(1.1, rel=0.03)                     # it follows, exponentially


def test_noise_lowers_confidence_and_rmse_is_in_pixels(face):
    cam = camera()
    solver = G.HeadPoseSolver(PoseConfig(iris_scale=False))
    R, t = G.rotation_from_yaw_pitch_roll_deg(5, 0, 0), np.array([0.0, 0.0, 0.7])
    clean = synthetic_landmarks(face, R, t, cam)
    rng = np.random.default_rng(5)
    confidences = []
    for sigma in (0.0, 2.0, 8.0):
        noisy = clean.copy()
        noisy[:, :2] += rng.normal(0.0, sigma, size=(478, 2))
        pose = solver.solve(noisy, cam, landmark_score=0.9)
        assert pose.fit_rmse_px == pytest.approx(sigma * math.sqrt(2), rel=0.25, abs=0.01)
        assert angle_deg(R, pose.R_cam_face) < 0.5 + 0.3 * sigma
        confidences.append(pose.confidence)
    assert confidences[0] == pytest.approx(0.9, abs=1e-3)      # exact fit: the landmark score
    assert confidences[0] > confidences[1] > confidences[2] > 0.0


def test_bad_input_raises_input_error(face):
    cam = camera()
    solver = G.HeadPoseSolver(PoseConfig())
    good = synthetic_landmarks(face, G.R_CAM_FACE_FRONTAL, np.array([0.0, 0.0, 0.6]), cam)
    for bad in (good[:467], good[:, :1], np.zeros((478, 4)), good.reshape(-1), np.zeros((0, 3)), "landmarks"):
        with pytest.raises(InputError, match="shape|numeric"):
            solver.solve(bad, cam)
    nan = good.copy()
    nan[10, 0] = np.nan
    with pytest.raises(ValueError, match="NaN"):
        solver.solve(nan, cam)
    inf = good.copy()
    inf[470, 1] = np.inf
    with pytest.raises(InputError, match="NaN or inf"):
        solver.solve(inf, cam)
    with pytest.raises(InputError, match="span less"):
        solver.solve(np.zeros((478, 3)), cam)          # collapsed landmarks: no face
    with pytest.raises(InputError, match="CameraModel"):
        solver.solve(good, cam.K)
    assert issubclass(InputError, ValueError)


# ---------------------------------------------------------------------------------------------- 68 points

def test_landmarks_68_ibug_order(face):
    idx = G.LANDMARKS_68
    assert idx.shape == (68,) and len(set(idx.tolist())) == 68 and idx.max() < 468
    v = face.vertices_face                              # y = the person's left, z = up
    jaw = v[idx[:17]]
    assert jaw[0, 1] < -0.07 and jaw[16, 1] > 0.07      # from the person's right ear to the left one ...
    assert np.all(np.diff(jaw[:9, 2]) < 0) and np.all(np.diff(jaw[8:, 2]) > 0)   # ... down to the chin, up
    assert np.all(np.diff(jaw[1:16, 1]) > 0)
    assert idx[8] == 152                                # chin
    assert np.all(np.diff(v[idx[17:27], 1]) > 0)       # brows: right outer -> ... -> left outer
    assert np.all(np.diff(v[idx[27:31], 2]) < 0)       # nose bridge downward
    assert idx[36] == 33 and idx[39] == 133 and idx[42] == 362 and idx[45] == 263   # eye corners
    assert idx[48] == 61 and idx[54] == 291             # mouth corners
    assert v[idx[36:42], 1].max() < 0 < v[idx[42:48], 1].min()
    # left-right mirror pairs of iBUG land on (nearly) mirrored mesh points
    mirror = [(0, 16), (1, 15), (2, 14), (3, 13), (4, 12), (5, 11), (6, 10), (7, 9), (17, 26), (18, 25),
              (19, 24), (20, 23), (21, 22), (31, 35), (32, 34), (36, 45), (37, 44), (38, 43), (39, 42),
              (40, 47), (41, 46), (48, 54), (49, 53), (50, 52), (55, 59), (56, 58), (60, 64), (61, 63),
              (65, 67)]
    for a, b in mirror:
        np.testing.assert_allclose(v[idx[a]] * [1, -1, 1], v[idx[b]], atol=2e-3, err_msg=f"{a} vs {b}")

    points = np.arange(478 * 3, dtype=float).reshape(478, 3)
    out = G.landmarks_68(points)
    assert out.shape == (68, 2)
    np.testing.assert_array_equal(out, points[idx, :2])
    with pytest.raises(InputError):
        G.landmarks_68(points[:100])


# ---------------------------------------------------------------------------------------------- real landmarks

def _aflw_landmarks():
    scipy_io = pytest.importorskip("scipy.io")
    if not AFLW.is_dir():
        pytest.skip(f"{AFLW} not present (a fresh clone has no ../shared/data)")
    try:
        from face3d_ros.core.config import PipelineConfig
        from face3d_ros.core.pipeline import FacePipeline
        config = PipelineConfig()
        config.tracking.enabled = False
        pipeline = FacePipeline(config)
    except (ImportError, FileNotFoundError) as error:
        pytest.skip(f"face pipeline unavailable: {error}")
    for image_path in sorted(AFLW.glob("*.jpg")):
        image = cv2.imread(str(image_path))
        mat = scipy_io.loadmat(str(image_path.with_suffix(".mat")))
        labelled = mat["pt3d_68"][:2].T
        faces = pipeline.process(image)
        if not faces:
            continue
        centre = labelled.mean(axis=0)
        best = min(faces, key=lambda f: np.linalg.norm((f.bbox[:2] + f.bbox[2:]) / 2 - centre))
        yield image, best, np.degrees(mat["Pose_Para"][0, [1, 0, 2]])


def test_real_landmarks_head_pose_against_aflw2000():
    """Regression guard on the 16 AFLW2000-3D development images (fx = fy = width, centred camera)."""
    solver = G.HeadPoseSolver(PoseConfig())
    errors = []
    for image, found, truth in _aflw_landmarks():
        h, w = image.shape[:2]
        pose = solver.solve(found.landmarks_px, CameraModel.default_for(w, h), found.landmark_score)
        errors.append(np.abs(np.array(G.yaw_pitch_roll_deg(pose.R_cam_face)) - truth))
        assert 0.15 < pose.t_cam_face[2] < 1.0          # a face filling a 450-px image at f = 450 px
        assert 0.0 < pose.confidence <= 1.0
    assert len(errors) >= 14
    mae = np.mean(errors, axis=0)
    assert mae.mean() < 7.0, mae                        # 4.6 deg when written (yaw 5.6, pitch 5.5, roll 2.8)


def test_tracking_tolerance_stays_within_0_01_deg_and_0_1_mm_on_real_landmarks():
    """Started from a previous image's pose, the fit stops at the looser GN_WARM_TOLERANCE_*: the pose must
    stay within 0.01 deg and 0.1 mm of the fit run to GN_TOLERANCE from the same start."""
    solver = G.HeadPoseSolver(PoseConfig())
    rng = np.random.default_rng(21)
    compared = 0
    for image, found, _ in _aflw_landmarks():
        h, w = image.shape[:2]
        cam = CameraModel.default_for(w, h)
        pose = solver.solve(found.landmarks_px, cam, found.landmark_score)
        uv = G.undistort_normalised_rows(found.landmarks_px[:, :2].T, cam)[:, :G.MESH_POINTS]
        z_px = found.landmarks_px[:G.MESH_POINTS, 2]
        for turn_deg, move_m in ((0.5, 0.003), (2.0, 0.01), (5.0, 0.04)):   # head motion between two images
            axis = rng.normal(size=3)
            R0 = cv2.Rodrigues(axis / np.linalg.norm(axis) * math.radians(turn_deg))[0] @ pose.R_cam_face
            t0 = pose.t_cam_face / pose.depth_scale + move_m * rng.normal(size=3) / math.sqrt(3)
            full = solver._refine(uv, R0, t0, cam.K, z_px, warm=False)
            early = solver._refine(uv, R0, t0, cam.K, z_px, warm=True)
            assert angle_deg(full[0], early[0]) < 0.01
            assert np.linalg.norm(full[1] - early[1]) < 1e-4
            compared += 1
    assert compared >= 42

