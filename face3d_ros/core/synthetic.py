"""Image sequences with known head motion, made from one real photo (the bundled public-domain astronaut).

The photo is turned in the image plane (a known change of roll) and scaled (a known change of depth:
scale s puts the face at depth z0 / s) about the face centre, optionally with sensor noise and JPEG.
Used by the sample camera, the demo and the stability benchmark.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

SAMPLE_IMAGE = Path(__file__).resolve().parents[1] / "data" / "astronaut.png"
ASTRONAUT_FACE_CENTRE = (224.0, 128.0)   # pixels in astronaut.png, between the eyes and the mouth


@dataclass(frozen=True)
class Motion:
    roll_deg_per_s: float = 0.0       # in-plane rotation speed, counter-clockwise on screen
    roll_start_deg: float = 0.0       # roll at t = 0 for a steady turn
    roll_amplitude_deg: float = 0.0   # > 0: oscillate with this amplitude instead of turning steadily
    period_s: float = 4.0             # oscillation period for roll and scale
    scale_amplitude: float = 0.0      # scale = 1 + amplitude * sin(...): depth ratio 1 / scale
    noise_sigma: float = 0.0          # Gaussian sensor noise, grey levels
    jpeg_quality: int = 0             # > 0: JPEG round trip at this quality


@dataclass(frozen=True)
class Frame:
    image: np.ndarray
    stamp_ns: int
    roll_deg: float    # applied in-plane rotation (counter-clockwise on screen)
    scale: float       # applied scale: the face's true depth is the reference depth / scale


def load_sample(path: Path = SAMPLE_IMAGE) -> np.ndarray:
    image = cv2.imread(str(path), cv2.IMREAD_COLOR)
    if image is None:
        raise FileNotFoundError(f"sample image not found: {path}")
    return image


def motion_at(motion: Motion, t: float) -> tuple[float, float]:
    """(roll in degrees, scale) at time t seconds."""
    phase = 2 * np.pi * t / motion.period_s
    roll = (motion.roll_amplitude_deg * np.sin(phase) if motion.roll_amplitude_deg
            else motion.roll_start_deg + motion.roll_deg_per_s * t)
    return float(roll), float(1.0 + motion.scale_amplitude * np.sin(phase))


def moving_face(n_frames: int, fps: float = 30.0, motion: Motion = Motion(), size: tuple[int, int] = (640, 480),
                source: np.ndarray | None = None, centre: tuple[float, float] = ASTRONAUT_FACE_CENTRE,
                seed: int = 0, start_ns: int = 0):
    """Yield `n_frames` Frames of `size` (width, height) with the face centre at the image centre."""
    source = load_sample() if source is None else source
    rng = np.random.default_rng(seed)
    width, height = size
    for i in range(n_frames):
        t = i / fps
        roll, scale = motion_at(motion, t)
        affine = cv2.getRotationMatrix2D(centre, roll, scale)
        affine[:, 2] += np.array([width / 2.0, height / 2.0]) - np.array(centre)
        image = cv2.warpAffine(source, affine, (width, height), flags=cv2.INTER_LINEAR,
                               borderMode=cv2.BORDER_REPLICATE)  # a mirror would add faces
        if motion.noise_sigma:
            noisy = image.astype(np.float32) + rng.normal(0.0, motion.noise_sigma, image.shape)
            image = np.clip(noisy, 0, 255).astype(np.uint8)
        if motion.jpeg_quality:
            ok, data = cv2.imencode(".jpg", image, [cv2.IMWRITE_JPEG_QUALITY, motion.jpeg_quality])
            image = cv2.imdecode(data, cv2.IMREAD_COLOR)
        yield Frame(image=image, stamp_ns=start_ns + int(round(t * 1e9)), roll_deg=roll, scale=scale)
