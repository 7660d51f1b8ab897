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

import math

import cv2
import numpy as np

from .config import SmoothingConfig
from .types import Face

# About a face's size in metres (canonical face: 15.5 cm wide, 17.7 cm tall): the unit of translation speed.
FACE_SIZE_M = 0.16
NS_PER_S = 1e9
SMALL_SIZE = 8      # OneEuroFilter on this many values or fewer works on floats (see _update_floats)


def smoothing_factor(dt_s: float, cutoff_hz):
    """Weight of the new sample in an exponential smoother equal to a first-order low-pass at `cutoff_hz`."""
    r = 2.0 * math.pi * cutoff_hz * dt_s
    return r / (r + 1.0)


class _OneEuroGains:
    """The three One Euro gains, public and read at every sample; subclasses define reset()."""

    def __init__(self, min_cutoff: float = 1.0, beta: float = 0.0, d_cutoff: float = 1.0) -> None:
        self.min_cutoff = min_cutoff
        self.beta = beta
        self.d_cutoff = d_cutoff
        self.reset()

    def reset(self) -> None:
        raise NotImplementedError


class OneEuroFilter(_OneEuroGains):
    """One Euro filter over numpy arrays of any fixed shape, element by element.

    Gains are public attributes, read at each call, so changing them takes effect on the next sample.
    The returned array is the filter's state and is read-only: copy it before writing into it.
    Inputs must be finite (a NaN would stay in the state until `reset()`).
    """

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
        a_d = smoothing_factor(dt, self.d_cutoff)
        k = 2.0 * math.pi * dt
        # speed (1 - a_d) + step a_d / dt: the low-passed derivative; r / (r + 1) with r = k beta |speed| /
        # scale + k min_cutoff: smoothing_factor(dt, min_cutoff + beta |speed| / scale)
        keep, rate, gain, base = 1.0 - a_d, a_d / dt, k * self.beta / scale, k * self.min_cutoff
        if x.size <= SMALL_SIZE:
            value = self._update_floats(x, keep, rate, gain, base)
        else:
            value = self._update_array(x, keep, rate, gain, base)
        self._store(value, stamp_ns)
        return self._value

    def _update_array(self, x: np.ndarray, keep: float, rate: float, gain: float, base: float) -> np.ndarray:
        """The new value, in as few passes over the array (and new arrays) as possible."""
        step = x - self._value
        speed = self._speed     # private: updated in place
        speed *= keep
        speed += step * rate
        r = np.abs(speed)
        r *= gain
        r += base
        alpha = r + 1.0
        np.divide(r, alpha, out=alpha)
        step *= alpha
        step += self._value
        return step

    def _update_floats(self, x: np.ndarray, keep: float, rate: float, gain: float, base: float) -> np.ndarray:
        """_update_array's operations on floats, value by value (the same results to the bit): for a handful
        of values (a translation) numpy's per-call cost is most of the time."""
        value, speed = [], []
        for xi, vi, si in zip(x.ravel().tolist(), self._value.ravel().tolist(), self._speed.ravel().tolist()):
            step = xi - vi
            si = si * keep + step * rate
            r = abs(si) * gain + base
            value.append(step * (r / (r + 1.0)) + vi)
            speed.append(si)
        self._speed = np.array(speed).reshape(x.shape)
        return np.array(value).reshape(x.shape)

    def _start(self, x: np.ndarray, stamp_ns: int) -> np.ndarray:
        self._speed = np.zeros_like(x)
        self._store(x.copy(), stamp_ns)
        return self._value

    def _store(self, value: np.ndarray, stamp_ns: int) -> None:
        self._value = frozen(value)  # the next sample depends on it: fail loudly on outside writes
        self._stamp_ns = stamp_ns


class RotationOneEuroFilter(_OneEuroGains):
    """One Euro filter on rotations (SO(3)), for 3x3 matrices or unit quaternions (w, x, y, z).

    Each sample moves the filtered rotation toward the input along the shortest arc, by the One Euro weight
    (a slerp): q_hat = q_hat_prev * (q_hat_prev^-1 q)^alpha. The speed is the angular velocity of that
    step, angle(q_hat_prev^-1 q) / dt, low-passed as a vector (so noise averages out instead of adding up).
    The step is taken in the filtered rotation's hemisphere, so q and -q (the same rotation) never make the
    output spin, and the output quaternion's sign is continuous from sample to sample.
    Stamps follow the module's rules (equal: previous output; backwards: reset).
    """

    def reset(self) -> None:
        # Plain float tuples: a handful of scalar operations run faster without numpy.
        self._quat: tuple | None = None                  # filtered rotation, (w, x, y, z)
        self._angular_velocity = (0.0, 0.0, 0.0)         # rad/s, in the filtered rotation's frame
        self._stamp_ns = 0

    def __call__(self, R, stamp_ns: int) -> np.ndarray:
        """Filter the rotation matrix `R` (3x3); returns a new proper rotation matrix."""
        return matrix_from_quat(self._filter(_quat_from_matrix(R), stamp_ns))

    def filter_quaternion(self, q, stamp_ns: int) -> np.ndarray:
        """Filter the quaternion `q` (w, x, y, z; any sign, normalised here); returns a new unit quaternion."""
        return np.array(self._filter(_normalized(tuple(float(c) for c in q)), stamp_ns))

    def _filter(self, q: tuple, stamp_ns: int) -> tuple:
        if self._quat is None or stamp_ns < self._stamp_ns:
            return self._start(q, stamp_ns)
        if stamp_ns == self._stamp_ns:
            return self._quat
        dt = (stamp_ns - self._stamp_ns) / NS_PER_S
        step = _rotation_vector(_quat_multiply(_quat_conjugate(self._quat), q))
        a_d = smoothing_factor(dt, self.d_cutoff)
        self._angular_velocity = tuple(w + a_d * (s / dt - w) for w, s in zip(self._angular_velocity, step))
        alpha = smoothing_factor(dt, self.min_cutoff + self.beta * math.hypot(*self._angular_velocity))
        step_taken = _quat_from_rotation_vector(tuple(alpha * s for s in step))
        self._quat = _normalized(_quat_multiply(self._quat, step_taken))
        self._stamp_ns = stamp_ns
        return self._quat

    def _start(self, q: tuple, stamp_ns: int) -> tuple:
        self._quat = q
        self._angular_velocity = (0.0, 0.0, 0.0)
        self._stamp_ns = stamp_ns
        return q


class FaceSmoother:
    """The filters of one tracked face: landmarks (pixels, in face sizes), translation (m, in face sizes)
    and rotation. The mesh is not filtered point by point: it is re-posed rigidly by the smoothed pose,
    vertices_s = R_s R^T (vertices - t) + t_s, so it stays consistent with the published pose.

    Smoothed: landmarks_px, R_cam_face, t_cam_face, vertices_cam. Left as measured: bbox and roi (they drive
    the association and the next crop, where lag hurts) and the scores.
    `update` returns a new Face whose landmark, pose and mesh arrays are read-only (successive outputs may
    share them) and never the input's: the caller may reuse its buffers. Copy an array to modify it.
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
            return with_frozen_copies(face)
        if not reliable:
            return self._hold(face)
        self._set_gains(config)
        landmarks = face.landmarks_px
        if landmarks is not None:
            scale = face_size_px(face.bbox)
            # float64 input: the filter's state itself, read-only and never written in place, so no copy
            landmarks = frozen(self.landmarks(landmarks, stamp_ns, scale).astype(landmarks.dtype, copy=False))
        if face.has_pose:
            R = frozen(self.rotation(face.R_cam_face, stamp_ns))
            t = self.translation(face.t_cam_face, stamp_ns, scale=FACE_SIZE_M)  # read-only state, never written
            vertices = None if face.vertices_cam is None else \
                frozen(repose(face.vertices_cam, face.R_cam_face, face.t_cam_face, R, t))
        else:
            R, t, vertices = (frozen_copy(a) for a in (face.R_cam_face, face.t_cam_face, face.vertices_cam))
        self._last = with_fields(face, landmarks_px=landmarks, R_cam_face=R, t_cam_face=t, vertices_cam=vertices)
        return self._last

    def _set_gains(self, config: SmoothingConfig) -> None:
        for f in (self.landmarks, self.translation, self.rotation):
            f.min_cutoff, f.beta, f.d_cutoff = config.min_cutoff, config.beta, config.d_cutoff

    def _hold(self, face: Face) -> Face:
        last = self._last
        if last is None:
            return with_frozen_copies(face)
        return with_fields(face, landmarks_px=last.landmarks_px, R_cam_face=last.R_cam_face,
                           t_cam_face=last.t_cam_face, vertices_cam=last.vertices_cam)


def face_size_px(bbox) -> float:
    """Geometric mean of the box's sides, at least one pixel (the unit of landmark speed)."""
    w, h = float(bbox[2] - bbox[0]), float(bbox[3] - bbox[1])
    return max(math.sqrt(max(w, 0.0) * max(h, 0.0)), 1.0)


def repose(vertices, R, t, R_new, t_new) -> np.ndarray:
    """Move points rigidly from pose (R, t) to pose (R_new, t_new): R_new R^T (v - t) + t_new (a new array)."""
    points = np.asarray(vertices)
    M = np.empty((3, 4))      # [R_new R^T | t_new - R_new R^T t]: one cv2.transform call for all points
    M[:, :3] = np.asarray(R_new, dtype=np.float64) @ np.asarray(R, dtype=np.float64).T
    M[:, 3] = t_new - M[:, :3] @ np.asarray(t, dtype=np.float64)
    moved = cv2.transform(np.asarray(points, dtype=np.float64).reshape(-1, 1, 3), M).reshape(points.shape)
    return moved.astype(points.dtype, copy=False)


def with_fields(face: Face, **changes) -> Face:
    """A shallow copy of `face` with `changes`: dataclasses.replace without re-running __init__ (Face has no
    __post_init__), 4x faster on this per-face hot path."""
    new = object.__new__(type(face))
    new.__dict__.update(face.__dict__, **changes)
    return new


def frozen(a: np.ndarray) -> np.ndarray:
    """`a`, made read-only: shared safely without copying again."""
    a.flags.writeable = False
    return a


def frozen_copy(a):
    return None if a is None else frozen(np.array(a))


def with_frozen_copies(face: Face) -> Face:
    """A copy of `face` whose landmark, pose and mesh arrays are read-only copies."""
    return with_fields(face, landmarks_px=frozen_copy(face.landmarks_px), R_cam_face=frozen_copy(face.R_cam_face),
                       t_cam_face=frozen_copy(face.t_cam_face), vertices_cam=frozen_copy(face.vertices_cam))


# Quaternions are (w, x, y, z), Hamilton convention. The public helpers take and give numpy arrays; the
# underscored ones work on float tuples for the filter's inner loop.

def quat_from_matrix(R) -> np.ndarray:
    """Unit quaternion of rotation matrix `R` (Shepperd's method: stable for every angle, including pi)."""
    return np.array(_quat_from_matrix(R))


def matrix_from_quat(q) -> np.ndarray:
    w, x, y, z = q
    return np.array([[1 - 2 * (y * y + z * z), 2 * (x * y - w * z), 2 * (x * z + w * y)],
                     [2 * (x * y + w * z), 1 - 2 * (x * x + z * z), 2 * (y * z - w * x)],
                     [2 * (x * z - w * y), 2 * (y * z + w * x), 1 - 2 * (x * x + y * y)]])


def quat_multiply(a, b) -> np.ndarray:
    return np.array(_quat_multiply(tuple(a), tuple(b)))


def _quat_from_matrix(R) -> tuple:
    (m00, m01, m02), (m10, m11, m12), (m20, m21, m22) = np.asarray(R, dtype=np.float64).tolist()
    trace = m00 + m11 + m22
    if trace >= max(m00, m11, m22):
        q = (1.0 + trace, m21 - m12, m02 - m20, m10 - m01)
    elif m00 >= m11 and m00 >= m22:
        q = (m21 - m12, 1.0 + m00 - m11 - m22, m01 + m10, m02 + m20)
    elif m11 >= m22:
        q = (m02 - m20, m01 + m10, 1.0 - m00 + m11 - m22, m12 + m21)
    else:
        q = (m10 - m01, m02 + m20, m12 + m21, 1.0 - m00 - m11 + m22)
    return _normalized(q)


def _normalized(q: tuple) -> tuple:
    n = math.sqrt(q[0] * q[0] + q[1] * q[1] + q[2] * q[2] + q[3] * q[3])
    return (q[0] / n, q[1] / n, q[2] / n, q[3] / n)


def _quat_multiply(a: tuple, b: tuple) -> tuple:
    aw, ax, ay, az = a
    bw, bx, by, bz = b
    return (aw * bw - ax * bx - ay * by - az * bz,
            aw * bx + ax * bw + ay * bz - az * by,
            aw * by - ax * bz + ay * bw + az * bx,
            aw * bz + ax * by - ay * bx + az * bw)


def _quat_conjugate(q: tuple) -> tuple:
    return (q[0], -q[1], -q[2], -q[3])


def _rotation_vector(q: tuple) -> tuple:
    """Axis * angle of unit quaternion `q`, the angle in [0, pi]: q and -q give the same vector."""
    w, x, y, z = q if q[0] >= 0.0 else (-q[0], -q[1], -q[2], -q[3])
    sin_half = math.sqrt(x * x + y * y + z * z)
    k = 2.0 * math.atan2(sin_half, w) / sin_half if sin_half > 1e-12 else 2.0  # small-angle limit
    return (k * x, k * y, k * z)


def _quat_from_rotation_vector(v: tuple) -> tuple:
    angle = math.sqrt(v[0] * v[0] + v[1] * v[1] + v[2] * v[2])
    k = math.sin(0.5 * angle) / angle if angle > 1e-12 else 0.5
    return (math.cos(0.5 * angle), k * v[0], k * v[1], k * v[2])
