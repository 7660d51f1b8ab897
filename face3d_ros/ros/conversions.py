"""ROS messages <-> numpy and face3d_ros.core types. The only module that converts between them.

Conventions:
- Images come out as C-contiguous uint8 BGR arrays of shape (H, W, 3) that own their memory (never a view
  of the message), the layout OpenCV and face3d_ros.core expect.
- A rotation R and translation t describe a child frame in its parent: x_parent = R @ x_child + t, with
  metres for t (REP-103). geometry_msgs quaternions are (x, y, z, w); `quaternion_xyzw_from_matrix` is the
  one place that builds one.
- Bad input raises `ImageFormatError` (images) or `CameraInfoError` (camera info), both
  `face3d_ros.core.types.InputError` (so ValueError) subclasses whose message says what is wrong and whose
  `kind` names the kind of problem (the node rate-limits its log lines per kind); rotations and
  translations raise ValueError.
- Limits: an image side above MAX_IMAGE_SIDE or more than MAX_IMAGE_PIXELS pixels is taken for a corrupt
  header; compressed images are checked from their PNG/JPEG header BEFORE they are decoded (a 400 kB PNG
  can declare 12000x12000 pixels: 430 MB once decoded). What the codecs print on stderr for corrupt data
  (libjpeg "Corrupt JPEG data", libpng errors) is captured into the error's message (or, for an image that is
  right all the same, returned by `decode_compressed`) instead of flooding the log once per image. A JPEG
  that decodes with wrong or missing pixels is rejected (kind "corrupt").

Images: the encodings in `IMAGE_ENCODINGS` are converted with numpy on every install, so the result does
not depend on whether cv_bridge is there. cv_bridge (a ROS install has it; PyPI does not) is used for the
other encodings it knows (Bayer, YUV, ...).
"""
from __future__ import annotations

import array
import os
import re
import struct
import sys
import tempfile
import threading
from contextlib import contextmanager

import cv2
import numpy as np
from geometry_msgs.msg import Point, Pose, Quaternion, Transform, TransformStamped, Vector3
from sensor_msgs.msg import CameraInfo, CompressedImage, Image
from std_msgs.msg import Header

from face3d_ros.core.geometry import quaternion_xyzw
from face3d_ros.core.types import CameraModel, InputError

try:
    from cv_bridge import CvBridge
except ImportError:  # the pip route: cv_bridge is not on PyPI
    CvBridge = None

__all__ = [
    "IMAGE_ENCODINGS", "MAX_IMAGE_SIDE", "MAX_IMAGE_PIXELS", "ImageFormatError", "CameraInfoError",
    "image_to_bgr", "compressed_to_bgr", "decode_compressed", "bgr_to_image_msg", "camera_info_to_model",
    "quaternion_xyzw_from_matrix", "pose_msg", "transform_stamped",
]


class ImageFormatError(InputError):
    """An Image or CompressedImage that cannot be converted; the message says why, `kind` what kind of
    problem it is (empty, too_large, encoding, step, data_length, no_data, compressed_depth, decode)."""

    def __init__(self, message: str, kind: str = "image"):
        super().__init__(message)
        self.kind = kind


class CameraInfoError(InputError):
    """A CameraInfo that gives no usable camera model; the message says why, `kind` what kind of problem it
    is (uncalibrated, non_finite, camera_matrix, focal_length, size, distortion)."""

    def __init__(self, message: str, kind: str = "camera_info"):
        super().__init__(message)
        self.kind = kind


# encoding -> (dtype of one channel, channels, cv2 conversion to BGR or None)
_ENCODINGS: dict[str, tuple[type, int, int | None]] = {
    "bgr8": (np.uint8, 3, None),
    "rgb8": (np.uint8, 3, cv2.COLOR_RGB2BGR),
    "bgra8": (np.uint8, 4, cv2.COLOR_BGRA2BGR),
    "rgba8": (np.uint8, 4, cv2.COLOR_RGBA2BGR),
    "mono8": (np.uint8, 1, cv2.COLOR_GRAY2BGR),
    "mono16": (np.uint16, 1, cv2.COLOR_GRAY2BGR),
    "16UC1": (np.uint16, 1, cv2.COLOR_GRAY2BGR),
}
IMAGE_ENCODINGS = tuple(_ENCODINGS)

# Larger sides are taken for corrupt headers, not images (32768 px covers 8K stereo and panoramas).
MAX_IMAGE_SIDE = 1 << 15
# ... and so are more pixels than this (33.5 Mpx, 100 MB as BGR; 8K UHD, 7680x4320, has 33.2 Mpx).
MAX_IMAGE_PIXELS = 1 << 25
# Focal lengths outside this range (pixels) are taken for a corrupt calibration, not a lens.
MIN_FOCAL_PX, MAX_FOCAL_PX = 1.0, 1e6

_bridge = CvBridge() if CvBridge is not None else None


def _check_image_size(width: int, height: int, what: str) -> None:
    if width <= 0 or height <= 0:
        raise ImageFormatError(f"{what} is empty ({width}x{height} pixels)", "empty")
    if width > MAX_IMAGE_SIDE or height > MAX_IMAGE_SIDE:
        raise ImageFormatError(f"{what} is {width}x{height} pixels, more than {MAX_IMAGE_SIDE} on a side:"
                               " a corrupt header?", "too_large")
    if width * height > MAX_IMAGE_PIXELS:
        raise ImageFormatError(f"{what} is {width}x{height} pixels, more than {MAX_IMAGE_PIXELS} pixels:"
                               " a corrupt header?", "too_large")


def image_to_bgr(msg: Image) -> np.ndarray:
    """sensor_msgs/Image -> uint8 BGR array (H, W, 3), honouring `step` (row padding) and `is_bigendian`.

    mono8 and mono16/16UC1 come out as gray BGR. 16-bit images are scaled linearly so that the image's
    maximum becomes 255 (an all-zero image stays black; `peak_scaled_8bit`).
    """
    encoding, width, height, step = msg.encoding, int(msg.width), int(msg.height), int(msg.step)
    what = f"{encoding or '(no encoding)'} image"
    _check_image_size(width, height, what)
    spec = _ENCODINGS.get(encoding)
    if spec is None:
        return _image_to_bgr_cv_bridge(msg, what)
    dtype, channels, to_bgr = spec
    itemsize = np.dtype(dtype).itemsize
    row_bytes = width * channels * itemsize
    if step < row_bytes:
        raise ImageFormatError(f"{what} {width}x{height}: step {step} is less than one row of pixels"
                               f" ({width} x {channels} x {itemsize} = {row_bytes} bytes)", "step")
    if len(msg.data) != step * height:
        raise ImageFormatError(f"{what} {width}x{height}: data holds {len(msg.data)} bytes, but step x height"
                               f" = {step} x {height} = {step * height}", "data_length")

    rows = np.frombuffer(msg.data, dtype=np.uint8).reshape(height, step)[:, :row_bytes]
    if itemsize == 1:
        pixels = rows.reshape(height, width, channels)
    else:
        wire = np.dtype(dtype).newbyteorder(">" if msg.is_bigendian else "<")
        pixels = np.ascontiguousarray(rows).view(wire).reshape(height, width, channels).astype(dtype)
        pixels = peak_scaled_8bit(pixels).reshape(height, width, channels)
    if to_bgr is None:
        return pixels.copy()  # own the memory: the message's buffer may be read-only or reused
    return cv2.cvtColor(pixels, to_bgr)


def peak_scaled_8bit(pixels: np.ndarray) -> np.ndarray:
    """16-bit (or float) pixels -> uint8, the brightest at 255: 16-bit cameras often carry 10- or 12-bit data,
    which a fixed division by 256 would leave almost black."""
    peak = float(pixels.max())
    return cv2.convertScaleAbs(pixels, alpha=255.0 / peak if peak > 0 else 0.0)


def _image_to_bgr_cv_bridge(msg: Image, what: str) -> np.ndarray:
    if _bridge is None:
        raise ImageFormatError(f"unsupported {what}: supported encodings are {', '.join(IMAGE_ENCODINGS)}"
                               " (cv_bridge, which knows more, is not installed)", "encoding")
    try:
        bgr = _bridge.imgmsg_to_cv2(msg, desired_encoding="bgr8")
    except Exception as exc:  # cv_bridge raises CvBridgeError, TypeError or cv2.error depending on the case
        raise ImageFormatError(f"cv_bridge could not convert the {what} to bgr8: {exc}", "encoding") from exc
    return np.array(bgr, dtype=np.uint8, order="C", copy=True)


def _declared_size(data: bytes) -> tuple[int, int] | None:
    """(width, height) from a PNG or JPEG header, without decoding; None for other formats or no header."""
    if data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) >= 24 and data[12:16] == b"IHDR":
        return struct.unpack(">II", data[16:24])
    if data[:2] != b"\xff\xd8":
        return None
    pos, end = 2, len(data)
    while pos + 4 <= end:
        if data[pos] != 0xFF:
            return None   # not at a marker: corrupt, the decoder says so
        marker = data[pos + 1]
        if marker == 0xFF:          # fill byte
            pos += 1
            continue
        if marker in (0x01, *range(0xD0, 0xD8)):   # markers without a length
            pos += 2
            continue
        length = struct.unpack(">H", data[pos + 2:pos + 4])[0]
        if 0xC0 <= marker <= 0xCF and marker not in (0xC4, 0xC8, 0xCC):   # SOFn: precision, height, width
            if pos + 9 > end:
                return None
            height, width = struct.unpack(">HH", data[pos + 5:pos + 9])
            return width, height
        if marker in (0xD9, 0xDA):   # end of image, start of scan before any frame header
            return None
        pos += 2 + length
    return None


_CODEC_NOISE = re.compile(r"^(Corrupt JPEG data|Premature end of JPEG|Invalid (JPEG|SOS|component|color)|Bogus|"
                          r"Unsupported marker|Huffman|JPEG datastream|Warning:|libpng |\[ ?WARN|\[ ?ERROR)",
                          re.IGNORECASE)
# libjpeg's words for pixels that are wrong or missing (bit errors, a truncated file): such an image is skipped
_CORRUPT_JPEG = re.compile(r"^(Corrupt JPEG data|Premature end of JPEG|Invalid (JPEG|SOS)|Bogus|Huffman)",
                           re.IGNORECASE)
# ... but a few bytes of junk between the image data and the end-of-image marker leave every pixel right (some
# webcams' MJPEG frames carry them, every frame). Many such bytes mean the decoder lost its way in corrupt data.
_HARMLESS_JPEG = re.compile(r"Corrupt JPEG data: ([1-9]|1[0-6]) extraneous bytes before marker 0xd9", re.IGNORECASE)
_OPENCV_LOG_PREFIX = re.compile(r"^\[ ?(WARN|ERROR)[^\]]*\] (global )?")
_stderr_lock = threading.Lock()


@contextmanager
def _codec_messages():
    """Capture what the image codecs print on file descriptor 2 while decoding; yields a list that holds
    their lines afterwards. Lines that are not codec messages (another thread's log) are written back."""
    lines: list[str] = []
    try:
        saved = os.dup(2)
    except OSError:      # no stderr at all: nothing to capture
        yield lines
        return
    with _stderr_lock, tempfile.TemporaryFile(mode="w+b") as capture:
        try:
            sys.stderr.flush()
        except Exception:
            pass
        os.dup2(capture.fileno(), 2)
        try:
            yield lines
        finally:
            os.dup2(saved, 2)
            os.close(saved)
            capture.seek(0)
            text = capture.read(1 << 16).decode("utf-8", "replace")
            other = []
            for line in text.splitlines():
                line = line.strip()
                if _CODEC_NOISE.match(line):
                    lines.append(_OPENCV_LOG_PREFIX.sub("", line))   # without OpenCV's "[ WARN:0@1.23] global "
                elif line:
                    other.append(line)
            if other:
                os.write(2, ("\n".join(other) + "\n").encode())


def compressed_to_bgr(msg: CompressedImage) -> np.ndarray:
    """sensor_msgs/CompressedImage (jpeg, png, ...; whatever OpenCV decodes) -> uint8 BGR array (H, W, 3); a
    16-bit PNG is scaled as a raw 16-bit image is (`peak_scaled_8bit`)."""
    return decode_compressed(msg)[0]


def decode_compressed(msg: CompressedImage) -> tuple[np.ndarray, list[str]]:
    """Like compressed_to_bgr, and the codec's warnings about an image that is right all the same (e.g. the
    "2 extraneous bytes before marker 0xd9" some webcams send with every frame, libpng's sRGB profile ones).

    A JPEG that libjpeg decodes with wrong or missing pixels ("Corrupt JPEG data: bad Huffman code",
    "Premature end of JPEG file": it greys the rest) raises ImageFormatError (kind "corrupt"): processing it
    would track faces where the corruption moved them."""
    fmt = msg.format or "(no format)"
    if "compresseddepth" in fmt.lower():
        raise ImageFormatError(f"compressed depth images ({fmt!r}) are not supported: subscribe to an"
                               " intensity image", "compressed_depth")
    if len(msg.data) == 0:
        raise ImageFormatError(f"compressed image ({fmt}) has no data", "no_data")
    data = bytes(msg.data) if not isinstance(msg.data, (bytes, bytearray)) else msg.data
    declared = _declared_size(data[:1 << 16])
    if declared is not None:
        _check_image_size(declared[0], declared[1], f"compressed image ({fmt}, {len(data)} bytes)")
    what = f"compressed image ({fmt}, {len(data)} bytes) could not be decoded"
    with _codec_messages() as codec:
        try:
            # at its own depth: a 16-bit PNG (compressed_image_transport's mono16) is scaled as a raw mono16 is
            bgr = cv2.imdecode(np.frombuffer(data, dtype=np.uint8), cv2.IMREAD_COLOR | cv2.IMREAD_ANYDEPTH)
        except cv2.error as exc:
            bgr, error = None, str(exc).strip().splitlines()[-1]
        else:
            error = None
    detail = "; ".join(dict.fromkeys(codec))   # the codec's own words, each once
    if bgr is None:
        reason = error or detail or "corrupt data or not an image format OpenCV reads"
        raise ImageFormatError(f"{what}: {reason}", "decode")
    warnings = list(dict.fromkeys(codec))
    corrupt = [w for w in warnings if _CORRUPT_JPEG.match(w) and not _HARMLESS_JPEG.match(w)]
    if corrupt:
        raise ImageFormatError(f"compressed image ({fmt}, {len(data)} bytes) is corrupt ({'; '.join(corrupt)}): "
                               "skipped rather than processed with wrong pixels", "corrupt")
    _check_image_size(bgr.shape[1], bgr.shape[0], f"decoded {fmt} image")
    return (bgr if bgr.dtype == np.uint8 else peak_scaled_8bit(bgr)), warnings


def bgr_to_image_msg(bgr: np.ndarray, header: Header) -> Image:
    """uint8 BGR array (H, W, 3) -> sensor_msgs/Image (bgr8, unpadded rows) carrying `header`."""
    bgr = np.asarray(bgr)
    if bgr.dtype != np.uint8 or bgr.ndim != 3 or bgr.shape[2] != 3:
        raise ValueError(f"expected a uint8 BGR array of shape (H, W, 3), got {bgr.dtype} {bgr.shape}")
    height, width = bgr.shape[:2]
    _check_image_size(width, height, "bgr8 image")
    data = array.array("B")
    data.frombytes(memoryview(np.ascontiguousarray(bgr)).cast("B"))  # ~10x faster than assigning bytes
    return Image(header=header, height=height, width=width, encoding="bgr8", is_bigendian=False,
                 step=width * 3, data=data)


def camera_info_to_model(msg: CameraInfo, *, rectified: bool = False) -> CameraModel:
    """sensor_msgs/CameraInfo -> CameraModel for the images that come with it.

    rectified=False (image_raw): K and D. rectified=True (image_rect): the left 3x3 of P and no distortion.
    Binning and an ROI (REP-104) are applied, so the model matches the published image, not the sensor.
    Raises CameraInfoError (an InputError) for an all-zero K (an uncalibrated camera), NaN or inf, a matrix
    that is not a pinhole camera matrix (last row 0 0 1, no lower-left terms), focal lengths outside
    [MIN_FOCAL_PX, MAX_FOCAL_PX] px, absurd sizes (an ROI or binning leaving no pixel, a side above
    MAX_IMAGE_SIDE), coefficients without a distortion model, and everything CameraModel rejects (e.g. a
    wrong number of coefficients).
    """
    name = "P" if rectified else "K"
    if rectified:
        K = np.asarray(msg.p, dtype=np.float64).reshape(3, 4)[:, :3].copy()
        D = np.zeros(0)
    else:
        K = np.asarray(msg.k, dtype=np.float64).reshape(3, 3).copy()
        D = np.asarray(msg.d, dtype=np.float64)
    frame = f"frame {msg.header.frame_id!r}"
    if not np.any(K):
        raise CameraInfoError(f"CameraInfo {name} is all zeros: the camera is not calibrated ({frame})",
                              "uncalibrated")
    if not np.all(np.isfinite(K)) or not np.all(np.isfinite(D)):
        raise CameraInfoError(f"CameraInfo {name} or D contains NaN or inf ({frame})", "non_finite")
    if K[2, 2] != 1.0 or K[2, 0] != 0.0 or K[2, 1] != 0.0 or K[1, 0] != 0.0:
        raise CameraInfoError(f"CameraInfo {name} is not a camera matrix [fx s cx; 0 fy cy; 0 0 1]: "
                              f"{np.round(K, 6).tolist()} ({frame})", "camera_matrix")
    # rectified images are a pinhole whatever the lens (an equidistant model would mean an f-theta fisheye)
    model = "plumb_bob" if rectified else (msg.distortion_model or "plumb_bob")
    if not msg.distortion_model and np.any(D):
        raise CameraInfoError(f"CameraInfo has distortion coefficients {D.tolist()} but no distortion_model",
                              "distortion")

    width, height = int(msg.width), int(msg.height)
    if width > MAX_IMAGE_SIDE or height > MAX_IMAGE_SIDE:
        raise CameraInfoError(f"CameraInfo is for {width}x{height} images, more than {MAX_IMAGE_SIDE} on a "
                              "side: a corrupt message?", "size")
    roi = msg.roi
    if roi.width or roi.height or roi.x_offset or roi.y_offset:
        if rectified:
            raise CameraInfoError("CameraInfo with an ROI is not supported for rectified images", "size")
        if width and height and (roi.x_offset + roi.width > width or roi.y_offset + roi.height > height):
            raise CameraInfoError(f"CameraInfo ROI {roi.width}x{roi.height}+{roi.x_offset}+{roi.y_offset} "
                                  f"is outside the {width}x{height} image", "size")
        K[0, 2] -= roi.x_offset
        K[1, 2] -= roi.y_offset
        width, height = int(roi.width) or width, int(roi.height) or height
    bx, by = max(int(msg.binning_x), 1), max(int(msg.binning_y), 1)
    if bx > MAX_IMAGE_SIDE or by > MAX_IMAGE_SIDE or (width and width < bx) or (height and height < by):
        raise CameraInfoError(f"CameraInfo binning {bx}x{by} leaves no pixel of the {width}x{height} image",
                              "size")
    K[0, :] /= bx
    K[1, :] /= by
    for axis, f in (("fx", K[0, 0]), ("fy", K[1, 1])):
        if f > 0 and not MIN_FOCAL_PX <= f <= MAX_FOCAL_PX:
            raise CameraInfoError(f"CameraInfo focal length {axis} = {f:.6g} px is outside [{MIN_FOCAL_PX:g}, "
                                  f"{MAX_FOCAL_PX:g}]: not a real lens ({frame})", "focal_length")
    try:
        return CameraModel(K=K, D=D, distortion_model=model, width=width // bx, height=height // by)
    except InputError as err:   # non-positive focal lengths, unknown model, wrong number of coefficients
        kind = "focal_length" if "focal" in str(err) else "distortion"
        raise CameraInfoError(f"CameraInfo: {err} ({frame})", kind) from err


def _as_rotation(R) -> np.ndarray:
    R = np.asarray(R, dtype=np.float64)
    if R.shape != (3, 3) or not np.all(np.isfinite(R)):
        raise ValueError(f"expected a finite 3x3 rotation matrix, got shape {R.shape}")
    err = np.abs(R.T @ R - np.eye(3)).max()
    if err > 1e-3 or np.linalg.det(R) <= 0:
        raise ValueError(f"not a rotation matrix (|R^T R - I| = {err:.2g}, det = {np.linalg.det(R):.3g})")
    return R


def _as_translation(t) -> np.ndarray:
    t = np.asarray(t, dtype=np.float64)
    if t.size != 3 or not np.all(np.isfinite(t)):
        raise ValueError(f"expected a finite translation of 3 values in metres, got shape {t.shape}")
    return t.reshape(3)


def quaternion_xyzw_from_matrix(R) -> np.ndarray:
    """Rotation matrix (3, 3) -> unit quaternion (x, y, z, w), the order of geometry_msgs/Quaternion.

    Convention: R maps child-frame vectors to the parent frame; the result has w >= 0 (the quaternion and
    its negation are the same rotation). Raises ValueError unless R is a rotation within 1e-3.
    """
    return quaternion_xyzw(_as_rotation(R))


def pose_msg(R, t) -> Pose:
    """Rotation (3, 3) and translation (3,) in metres -> geometry_msgs/Pose of the child frame in its parent."""
    t = _as_translation(t)
    x, y, z, w = quaternion_xyzw_from_matrix(R)
    return Pose(position=Point(x=t[0], y=t[1], z=t[2]), orientation=Quaternion(x=x, y=y, z=z, w=w))


def transform_stamped(header: Header, child_frame_id: str, R, t) -> TransformStamped:
    """The transform from header.frame_id (parent) to child_frame_id, stamped with header.stamp."""
    if not header.frame_id or not child_frame_id or child_frame_id == header.frame_id:
        raise ValueError(f"a transform needs two different, non-empty frames; got parent"
                         f" {header.frame_id!r} and child {child_frame_id!r}")
    t = _as_translation(t)
    x, y, z, w = quaternion_xyzw_from_matrix(R)
    return TransformStamped(
        header=header, child_frame_id=child_frame_id,
        transform=Transform(translation=Vector3(x=t[0], y=t[1], z=t[2]),
                            rotation=Quaternion(x=x, y=y, z=z, w=w)))
