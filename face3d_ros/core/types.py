"""The data that flows between the stages: image -> detections -> ROIs -> landmarks -> pose -> tracks.

Conventions (see README "Frames and conventions"):
- image coordinates are pixels, origin at the top-left corner of the top-left pixel, x right, y down;
- 3D quantities are in metres in the camera's optical frame (REP-103: x right, y down, z forward);
- the face frame is REP-155's: origin between the eyes, x out of the face, y to the person's left, z up.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np


class InputError(ValueError):
    """An image or camera model the pipeline cannot use; the message says why."""


@dataclass(frozen=True)
class CameraModel:
    """Pinhole intrinsics and lens distortion, as in sensor_msgs/CameraInfo.

    K is the 3x3 camera matrix, D the distortion coefficients of `distortion_model`
    ("plumb_bob"/"rational_polynomial": OpenCV's k1 k2 p1 p2 [k3 [k4 k5 k6]]; "equidistant": fisheye k1..k4).
    """

    K: np.ndarray
    D: np.ndarray = field(default_factory=lambda: np.zeros(0))
    distortion_model: str = "plumb_bob"
    width: int = 0
    height: int = 0

    def __post_init__(self) -> None:
        K = np.asarray(self.K, dtype=np.float64)
        D = np.asarray(self.D, dtype=np.float64).reshape(-1)
        if K.shape == (9,):
            K = K.reshape(3, 3)
        if K.shape != (3, 3):
            raise InputError(f"camera matrix K must be 3x3, got shape {K.shape}")
        if not np.all(np.isfinite(K)) or not np.all(np.isfinite(D)):
            raise InputError("camera matrix K or distortion D contains NaN or inf")
        if K[0, 0] <= 0 or K[1, 1] <= 0:
            raise InputError(f"camera matrix K has non-positive focal lengths fx={K[0, 0]} fy={K[1, 1]}"
                             " (an all-zero K means an uncalibrated camera)")
        if K[1, 0] != 0 or np.any(K[2] != (0.0, 0.0, 1.0)):
            raise InputError(f"camera matrix K must be [[fx, s, cx], [0, fy, cy], [0, 0, 1]], got rows "
                             f"{K[1].tolist()} and {K[2].tolist()}")
        if self.distortion_model not in ("plumb_bob", "rational_polynomial", "equidistant"):
            raise InputError(f"unsupported distortion model {self.distortion_model!r}")
        if self.distortion_model == "equidistant" and D.size not in (0, 4):
            raise InputError(f"equidistant distortion needs 4 coefficients, got {D.size}")
        if self.distortion_model != "equidistant" and D.size not in (0, 4, 5, 8, 12, 14):
            raise InputError(f"{self.distortion_model} distortion needs 4, 5, 8, 12 or 14 coefficients, got {D.size}")
        object.__setattr__(self, "K", K)
        object.__setattr__(self, "D", D)

    @property
    def has_distortion(self) -> bool:
        """Whether pixels must be undistorted: a fisheye (equidistant) lens always, even with zero
        coefficients (then theta_d = theta: f-theta, not a pinhole); the others when a coefficient is not 0."""
        return self.distortion_model == "equidistant" or bool(self.D.size and np.any(self.D != 0))

    def fits(self, width: int, height: int) -> bool:
        """Whether this calibration is for width x height images (a size of 0 x 0 is for any)."""
        return not (self.width and self.height) or (self.width, self.height) == (width, height)

    @property
    def fisheye_D(self) -> np.ndarray:
        """The equidistant model's k1..k4 as OpenCV's fisheye functions take them (zeros when D is empty)."""
        return (self.D if self.D.size else np.zeros(4)).reshape(4, 1)

    @classmethod
    def from_fov(cls, width: int, height: int, hfov_deg: float) -> "CameraModel":
        """An ideal pinhole with the given horizontal field of view, centred, square pixels."""
        if not (0 < hfov_deg < 180):
            raise InputError(f"horizontal field of view must be in (0, 180) degrees, got {hfov_deg}")
        fx = (width / 2.0) / np.tan(np.radians(hfov_deg) / 2.0)
        return cls.from_focal(width, height, fx)

    @classmethod
    def from_focal(cls, width: int, height: int, fx: float, fy: float | None = None,
                   cx: float | None = None, cy: float | None = None) -> "CameraModel":
        fy = fx if fy is None else fy
        cx = width / 2.0 if cx is None else cx
        cy = height / 2.0 if cy is None else cy
        K = np.array([[fx, 0, cx], [0, fy, cy], [0, 0, 1]], dtype=np.float64)
        return cls(K=K, width=width, height=height)

    @classmethod
    def default_for(cls, width: int, height: int) -> "CameraModel":
        """The documented default when no calibration is given: fx = fy = image width (~53 deg HFOV),
        principal point at the image centre, no distortion (the usual AFLW2000-3D protocol camera)."""
        return cls.from_focal(width, height, float(width))


@dataclass
class Detection:
    """One face from a detector, in image pixels."""

    score: float
    bbox: np.ndarray            # (4,) x0, y0, x1, y1
    keypoints: np.ndarray       # (6, 2): right eye, left eye, nose tip, mouth, right ear, left ear (the person's)


@dataclass
class Roi:
    """A rotated square region of the image, the crop the landmark model sees (MediaPipe's NormalizedRect, in pixels)."""

    center: np.ndarray          # (2,) x, y
    size: float                 # side length
    rotation: float             # radians; positive turns the crop clockwise in the image (y down)


@dataclass
class Face:
    """Everything the pipeline knows about one face in one image."""

    bbox: np.ndarray                    # (4,) x0, y0, x1, y1 in pixels (from the landmarks when present)
    detection_score: float              # score of the detection that started (or last refreshed) this face
    roi: Roi                            # crop used for the landmarks
    landmark_score: float = 0.0         # face-presence probability from the landmark model
    landmarks_px: np.ndarray | None = None   # (478, 3): x, y in pixels, z in pixels (relative depth, MediaPipe scale)
    # Metric head pose: R_cam_face maps face-frame vectors to the camera optical frame; t in metres.
    R_cam_face: np.ndarray | None = None     # (3, 3)
    t_cam_face: np.ndarray | None = None     # (3,)
    vertices_cam: np.ndarray | None = None   # (478, 3) metres, camera optical frame
    fit_rmse_px: float = float("nan")        # RMS reprojection error of the pose fit
    pose_confidence: float = 0.0             # [0, 1], from the fit residual and the landmark score
    depth_scale: float = 1.0                 # head size / canonical head size (from the iris); 1 = not measured
    iris_samples: int = 0                    # images whose iris measurements depth_scale rests on (0: none)
    motion_px: np.ndarray | None = None      # (2,) box centre motion since the previous image (tracking)
    track_id: str = ""                       # set by the tracker
    track_age: int = 0
    track_state: int = 0

    @property
    def has_pose(self) -> bool:
        return self.R_cam_face is not None and self.t_cam_face is not None
