"""Temporal smoothing on image stamps: One Euro filters for arrays, rotations and whole faces.

The One Euro filter (Casiez, Roussel and Vogel, CHI 2012) is an exponential smoother whose cutoff frequency
rises with the signal's speed, cutoff = min_cutoff + beta * |speed|: a still face is smoothed hard (little
jitter), a moving one lightly (little lag). As in the paper, the speed is measured from the previous FILTERED
value, and the speed itself is low-passed at d_cutoff.

Time is the image stamp in integer nanoseconds, never the wall clock. Stamps that do not move forward never
divide by zero:
- an equal stamp (the same image twice) is "no new time": the previous output is returned, the state is kept;
- a stamp going backwards (a looping bag, a restarted driver) resets the filter: the output is the input.

Speeds are made comparable across signals by a `scale` (the unit in which `beta` is expressed): landmarks and
translation are measured in face sizes per second, so the same gains suit a face 0.5 m or 3 m away (pixel
jitter grows with the face's size in the image). Rotation speed is in rad/s: turning the head by 1 rad moves
its points by about half a face size, so the same gains suit it too.
"""
from __future__ import annotations

import dataclasses
import math

import numpy as np

from .config import SmoothingConfig
from .types import Face

# About a face's size in metres (canonical face: 15.5 cm wide, 17.7 cm tall): the unit of translation speed.
FACE_SIZE_M = 0.16
NS_PER_S = 1e9


def smoothing_factor(dt_s: float, cutoff_hz):
    """Weight of the new sample in an exponential smoother equal to a first-order low-pass at `cutoff_hz`."""
    r = 2.0 * math.pi * cutoff_hz * dt_s
    return r / (r + 1.0)


class OneEuroFilter:
    """One Euro filter over numpy arrays of any fixed shape, element by element.

    Gains are public attributes, read at each call, so changing them takes effect on the next sample.
    The returned array is the filter's state and is read-only: copy it before writing into it.
    Inputs must be finite (a NaN would stay in the state until `reset()`).
    """

    def __init__(self, min_cutoff: float = 1.0, beta: float = 0.0, d_cutoff: float = 1.0) -> None:
        self.min_cutoff = min_cutoff
        self.beta = beta
        self.d_cutoff = d_cutoff
        self.reset()

    def reset(self) -> None:
        self._value: np.ndarray | None = None    # last output
        self._speed: np.ndarray | None = None    # low-passed derivative, units of x per second
        self._stamp_ns = 0

    @property
    def value(self) -> np.ndarray | None:
        return self._value

    def __call__(self, x, stamp_ns: int, scale: float = 1.0) -> np.ndarray:
        """Filter sample `x` taken at `stamp_ns`; `scale` is the unit of `beta`'s speed (speed = |dx/dt| / scale)."""
        x = np.asarray(x, dtype=np.float64)
        if self._value is None or x.shape != self._value.shape or stamp_ns < self._stamp_ns:
            return self._start(x, stamp_ns)
        if stamp_ns == self._stamp_ns:
            return self._value
        dt = (stamp_ns - self._stamp_ns) / NS_PER_S
        derivative = (x - self._value) / dt
        self._speed = self._speed + smoothing_factor(dt, self.d_cutoff) * (derivative - self._speed)
        cutoff = self.min_cutoff + (self.beta / scale) * np.abs(self._speed)
        self._store(self._value + smoothing_factor(dt, cutoff) * (x - self._value), stamp_ns)
        return self._value

    def _start(self, x: np.ndarray, stamp_ns: int) -> np.ndarray:
        self._speed = np.zeros_like(x)
        self._store(x.copy(), stamp_ns)
        return self._value

    def _store(self, value: np.ndarray, stamp_ns: int) -> None:
        value.flags.writeable = False  # the next sample depends on it: fail loudly on outside writes
        self._value = value
        self._stamp_ns = stamp_ns


class RotationOneEuroFilter:
    """One Euro filter on rotations (SO(3)), for 3x3 matrices or unit quaternions (w, x, y, z).

    Each sample moves the filtered rotation toward the input along the shortest arc, by the One Euro weight
    (a slerp): q_hat = q_hat_prev * (q_hat_prev^-1 q)^alpha. The speed is the angular velocity of that
    step, angle(q_hat_prev^-1 q) / dt, low-passed as a vector (so noise averages out instead of adding up).
    The input is brought to the filtered rotation's hemisphere first, so q and -q (the same rotation) never
    make the output spin. The output quaternion's sign is continuous from sample to sample.
    Stamps follow the module's rules (equal: previous output; backwards: reset).
    """

    def __init__(self, min_cutoff: float = 1.0, beta: float = 0.0, d_cutoff: float = 1.0) -> None:
        self.min_cutoff = min_cutoff
        self.beta = beta
        self.d_cutoff = d_cutoff
        self.reset()

    def reset(self) -> None:
        self._quat: np.ndarray | None = None              # filtered rotation, (w, x, y, z)
        self._angular_velocity = np.zeros(3)              # rad/s, in the filtered rotation's frame
        self._stamp_ns = 0

    def __call__(self, R, stamp_ns: int) -> np.ndarray:
        """Filter the rotation matrix `R` (3x3); returns a proper rotation matrix."""
        return matrix_from_quat(self.filter_quaternion(quat_from_matrix(R), stamp_ns))

    def filter_quaternion(self, q, stamp_ns: int) -> np.ndarray:
        """Filter the quaternion `q` (w, x, y, z; any sign, normalised here); returns a new unit quaternion."""
        q = np.asarray(q, dtype=np.float64)
        q = q / np.linalg.norm(q)
        if self._quat is None or stamp_ns < self._stamp_ns:
            return self._start(q, stamp_ns)
        if stamp_ns == self._stamp_ns:
            return self._quat.copy()
        dt = (stamp_ns - self._stamp_ns) / NS_PER_S
        step = rotation_vector(quat_multiply(quat_conjugate(self._quat), q))
        self._angular_velocity += smoothing_factor(dt, self.d_cutoff) * (step / dt - self._angular_velocity)
        cutoff = self.min_cutoff + self.beta * float(np.linalg.norm(self._angular_velocity))
        alpha = smoothing_factor(dt, cutoff)
        self._quat = quat_multiply(self._quat, quat_from_rotation_vector(alpha * step))
        self._quat /= np.linalg.norm(self._quat)
        self._stamp_ns = stamp_ns
        return self._quat.copy()

    def _start(self, q: np.ndarray, stamp_ns: int) -> np.ndarray:
        self._quat = q.copy()
        self._angular_velocity = np.zeros(3)
        self._stamp_ns = stamp_ns
        return q


class FaceSmoother:
    """The filters of one tracked face: landmarks (pixels, in face sizes), translation (m, in face sizes)
    and rotation. The mesh is not filtered point by point: it is re-posed rigidly by the smoothed pose,
    vertices_s = R_s R^T (vertices - t) + t_s, so it stays consistent with the published pose.

    Smoothed: landmarks_px, R_cam_face, t_cam_face, vertices_cam. Left as measured: bbox and roi (they drive
    the association and the next crop, where lag hurts) and the scores.
    Returned faces are new objects whose smoothed arrays are not the filters' state (the other fields are
    the input's); treat them as read-only, as `update` may hand the same arrays back while holding.
    """

    def __init__(self) -> None:
        self.landmarks = OneEuroFilter()
        self.translation = OneEuroFilter()
        self.rotation = RotationOneEuroFilter()
        self._last: Face | None = None

    def reset(self) -> None:
        self.landmarks.reset()
        self.translation.reset()
        self.rotation.reset()
        self._last = None

    def update(self, face: Face, stamp_ns: int, config: SmoothingConfig, reliable: bool = True) -> Face:
        """Smooth `face` measured in the image stamped `stamp_ns` (the input is not modified).

        - smoothing disabled: the filters are reset and the raw face is returned;
        - unreliable measurement: the filters are NOT updated and the last smoothed landmarks, pose and mesh
          are returned (held) with this image's bbox, roi and scores; the raw face if nothing was smoothed yet.
        """
        if not config.enabled:
            self.reset()
            return dataclasses.replace(face)
        if not reliable:
            return self._hold(face)
        self._set_gains(config)
        smoothed = dataclasses.replace(face)
        if face.landmarks_px is not None:
            landmarks = self.landmarks(face.landmarks_px, stamp_ns, scale=face_size_px(face.bbox))
            smoothed.landmarks_px = landmarks.astype(face.landmarks_px.dtype)  # a copy, never the state
        if face.has_pose:
            smoothed.R_cam_face = self.rotation(face.R_cam_face, stamp_ns)
            smoothed.t_cam_face = self.translation(face.t_cam_face, stamp_ns, scale=FACE_SIZE_M).copy()
            if face.vertices_cam is not None:
                smoothed.vertices_cam = repose(face.vertices_cam, face.R_cam_face, face.t_cam_face,
                                               smoothed.R_cam_face, smoothed.t_cam_face)
        self._last = smoothed
        return smoothed

    def _set_gains(self, config: SmoothingConfig) -> None:
        for f in (self.landmarks, self.translation, self.rotation):
            f.min_cutoff, f.beta, f.d_cutoff = config.min_cutoff, config.beta, config.d_cutoff

    def _hold(self, face: Face) -> Face:
        last = self._last
        if last is None:
            return dataclasses.replace(face)
        return dataclasses.replace(face, landmarks_px=last.landmarks_px, R_cam_face=last.R_cam_face,
                                   t_cam_face=last.t_cam_face, vertices_cam=last.vertices_cam)


def face_size_px(bbox) -> float:
    """Geometric mean of the box's sides, at least one pixel (the unit of landmark speed)."""
    w, h = bbox[2] - bbox[0], bbox[3] - bbox[1]
    return max(math.sqrt(max(w, 0.0) * max(h, 0.0)), 1.0)


def repose(vertices, R, t, R_new, t_new) -> np.ndarray:
    """Move points rigidly from pose (R, t) to pose (R_new, t_new): R_new R^T (v - t) + t_new."""
    M = R_new @ np.asarray(R).T
    return (vertices @ M.T + (t_new - M @ t)).astype(np.asarray(vertices).dtype, copy=False)


# Quaternions are (w, x, y, z), Hamilton convention, as numpy float64 arrays of shape (4,).

def quat_multiply(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    aw, ax, ay, az = a
    bw, bx, by, bz = b
    return np.array([aw * bw - ax * bx - ay * by - az * bz,
                     aw * bx + ax * bw + ay * bz - az * by,
                     aw * by - ax * bz + ay * bw + az * bx,
                     aw * bz + ax * by - ay * bx + az * bw])


def quat_conjugate(q: np.ndarray) -> np.ndarray:
    return np.array([q[0], -q[1], -q[2], -q[3]])


def rotation_vector(q: np.ndarray) -> np.ndarray:
    """Axis * angle of unit quaternion `q`, the angle in [0, pi] (q and -q give the same vector)."""
    if q[0] < 0.0:
        q = -q
    sin_half = math.sqrt(q[1] * q[1] + q[2] * q[2] + q[3] * q[3])
    if sin_half < 1e-12:
        return 2.0 * q[1:]  # small-angle limit
    return (2.0 * math.atan2(sin_half, q[0]) / sin_half) * q[1:]


def quat_from_rotation_vector(v: np.ndarray) -> np.ndarray:
    angle = math.sqrt(v[0] * v[0] + v[1] * v[1] + v[2] * v[2])
    if angle < 1e-12:
        return np.array([1.0, 0.5 * v[0], 0.5 * v[1], 0.5 * v[2]])
    s = math.sin(0.5 * angle) / angle
    return np.array([math.cos(0.5 * angle), s * v[0], s * v[1], s * v[2]])


def quat_from_matrix(R) -> np.ndarray:
    """Unit quaternion of rotation matrix `R` (Shepperd's method: stable for every angle, including pi)."""
    (m00, m01, m02), (m10, m11, m12), (m20, m21, m22) = np.asarray(R, dtype=np.float64).tolist()
    trace = m00 + m11 + m22
    if trace >= max(m00, m11, m22):
        q = [1.0 + trace, m21 - m12, m02 - m20, m10 - m01]
    elif m00 >= m11 and m00 >= m22:
        q = [m21 - m12, 1.0 + m00 - m11 - m22, m01 + m10, m02 + m20]
    elif m11 >= m22:
        q = [m02 - m20, m01 + m10, 1.0 - m00 + m11 - m22, m12 + m21]
    else:
        q = [m10 - m01, m02 + m20, m12 + m21, 1.0 - m00 - m11 + m22]
    q = np.array(q)
    return q / np.linalg.norm(q)


def matrix_from_quat(q: np.ndarray) -> np.ndarray:
    w, x, y, z = q
    return np.array([[1 - 2 * (y * y + z * z), 2 * (x * y - w * z), 2 * (x * z + w * y)],
                     [2 * (x * y + w * z), 1 - 2 * (x * x + z * z), 2 * (y * z - w * x)],
                     [2 * (x * z - w * y), 2 * (y * z + w * x), 1 - 2 * (x * x + y * y)]])
