"""face3d_ros.ros.conversions with real ROS messages (the rclpy wheels' sensor_msgs/geometry_msgs/std_msgs).

Images are built by hand here (not with bgr_to_image_msg) so that each encoding, row padding and byte
order is checked against an independent construction, on a real photo.
"""
from pathlib import Path

import cv2
import numpy as np
import pytest

pytest.importorskip("sensor_msgs.msg", reason="needs the ROS message packages (scripts/setup_env.sh)")

from builtin_interfaces.msg import Time  # noqa: E402
from rclpy.serialization import deserialize_message, serialize_message  # noqa: E402
from scipy.spatial.transform import Rotation  # noqa: E402
from sensor_msgs.msg import CameraInfo, CompressedImage, Image, RegionOfInterest  # noqa: E402
from std_msgs.msg import Header  # noqa: E402

from face3d_ros.core.types import CameraModel, InputError  # noqa: E402
from face3d_ros.ros import conversions as conv  # noqa: E402
from face3d_ros.ros.conversions import ImageFormatError  # noqa: E402

HERE = Path(__file__).resolve().parent
ASTRONAUT = [HERE / "data" / "astronaut.png",  # NASA, public domain
             HERE.parent.parent / "shared" / "data" / "single_face" / "skimage_astronaut.png"]


@pytest.fixture(scope="module")
def bgr():
    """The astronaut photo, cropped to an odd width so rows are not multiples of 4 bytes."""
    for path in ASTRONAUT:
        if path.is_file():
            img = cv2.imread(str(path), cv2.IMREAD_COLOR)
            assert img is not None, f"cannot read {path}"
            return np.ascontiguousarray(img[:301, :257])
    pytest.skip(f"astronaut test image not found in {[str(p) for p in ASTRONAUT]}")


def header(frame="camera_optical_frame", sec=1700000000, nanosec=123456789):
    return Header(stamp=Time(sec=sec, nanosec=nanosec), frame_id=frame)


def make_image(pixels, encoding, pad=0, bigendian=False):
    """A sensor_msgs/Image holding `pixels` (H, W[, C]) as `encoding`, rows padded with `pad` junk bytes."""
    pixels = np.asarray(pixels)
    if pixels.dtype.itemsize > 1:
        pixels = pixels.astype(pixels.dtype.newbyteorder(">" if bigendian else "<"))
    height = pixels.shape[0]
    rows = pixels.reshape(height, -1).view(np.uint8)
    rows = np.concatenate([rows, np.full((height, pad), 0xA5, np.uint8)], axis=1)
    return Image(header=header(), height=height, width=pixels.shape[1], encoding=encoding,
                 is_bigendian=bigendian, step=rows.shape[1], data=rows.tobytes())


def expected_16bit(gray16):
    return cv2.cvtColor(np.round(gray16 * (255.0 / gray16.max())).astype(np.uint8), cv2.COLOR_GRAY2BGR)


EIGHT_BIT = {  # encoding -> (BGR -> that encoding's pixels, the BGR image image_to_bgr must return)
    "bgr8": (lambda b: b, lambda b: b),
    "rgb8": (lambda b: cv2.cvtColor(b, cv2.COLOR_BGR2RGB), lambda b: b),
    "bgra8": (lambda b: cv2.cvtColor(b, cv2.COLOR_BGR2BGRA), lambda b: b),
    "rgba8": (lambda b: cv2.cvtColor(b, cv2.COLOR_BGR2RGBA), lambda b: b),
    "mono8": (lambda b: cv2.cvtColor(b, cv2.COLOR_BGR2GRAY),
              lambda b: cv2.cvtColor(cv2.cvtColor(b, cv2.COLOR_BGR2GRAY), cv2.COLOR_GRAY2BGR)),
}


def check_bgr(out, expected):
    assert out.dtype == np.uint8 and out.shape == expected.shape and out.flags.c_contiguous
    np.testing.assert_array_equal(out, expected)


# --- Image -> BGR -------------------------------------------------------------------------------------

@pytest.mark.parametrize("pad", [0, 3, 64])
@pytest.mark.parametrize("encoding", sorted(EIGHT_BIT))
def test_8bit_encodings_with_row_padding(bgr, encoding, pad):
    to_encoding, to_expected = EIGHT_BIT[encoding]
    msg = make_image(to_encoding(bgr), encoding, pad=pad)
    check_bgr(conv.image_to_bgr(msg), to_expected(bgr))


@pytest.mark.parametrize("bigendian", [False, True])
@pytest.mark.parametrize("pad", [0, 6])
@pytest.mark.parametrize("encoding", ["mono16", "16UC1"])
def test_16bit_encodings_scale_to_8bit_honouring_byte_order(bgr, encoding, pad, bigendian):
    gray16 = cv2.cvtColor(bgr, cv2.COLOR_BGR2GRAY).astype(np.uint16) * 4 + 3   # 10-bit data, like IR cameras
    out = conv.image_to_bgr(make_image(gray16, encoding, pad=pad, bigendian=bigendian))
    assert out.dtype == np.uint8 and out.shape == bgr.shape
    assert out.max() == 255, "the image's maximum maps to 255"
    assert np.abs(out.astype(int) - expected_16bit(gray16)).max() <= 1   # rounding only


def test_all_zero_16bit_image_stays_black():
    out = conv.image_to_bgr(make_image(np.zeros((4, 5), np.uint16), "16UC1"))
    assert out.shape == (4, 5, 3) and not out.any()


def test_output_owns_its_memory_even_when_the_message_data_is_read_only(bgr):
    msg = make_image(bgr, "bgr8")
    out = conv.image_to_bgr(msg)
    assert out.flags.writeable
    assert not np.shares_memory(out, np.frombuffer(msg.data, np.uint8))
    out[:] = 0
    check_bgr(conv.image_to_bgr(msg), bgr)


def test_image_after_a_serialization_round_trip(bgr):
    """What a subscriber gets from the middleware (data as array.array), padded rows included."""
    sent = make_image(cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB), "rgb8", pad=5)
    received = deserialize_message(serialize_message(sent), Image)
    check_bgr(conv.image_to_bgr(received), bgr)


@pytest.mark.parametrize("change, reason", [
    (dict(encoding="nonsense8"), "unsupported"),
    (dict(width=0, height=0, step=0, data=b""), "empty"),
    (dict(height=0), "empty"),
    (dict(width=100_000), "more than"),
    (dict(step=10), "step 10 is less than one row"),
    (dict(data=b"\x00" * 100), "data holds 100 bytes"),
])
def test_bad_images_raise_a_clear_error(bgr, change, reason):
    msg = make_image(bgr, "bgr8")
    for field, value in change.items():
        setattr(msg, field, value)
    if conv.CvBridge is not None and reason == "unsupported":
        reason = "cv_bridge could not convert"
    with pytest.raises(ImageFormatError, match=reason):
        conv.image_to_bgr(msg)


def test_data_one_byte_longer_than_step_times_height_is_rejected(bgr):
    msg = make_image(bgr, "bgr8")
    msg.data = bytes(msg.data) + b"\x00"
    with pytest.raises(ImageFormatError, match="step x height"):
        conv.image_to_bgr(msg)


def test_error_types_are_value_errors_the_pipeline_already_handles():
    assert issubclass(ImageFormatError, InputError) and issubclass(ImageFormatError, ValueError)


# --- CompressedImage -> BGR ---------------------------------------------------------------------------

def compressed(bgr, fmt, ext, params=()):
    ok, buf = cv2.imencode(ext, bgr, list(params))
    assert ok
    return CompressedImage(header=header(), format=fmt, data=buf.tobytes())


def test_png_decodes_exactly(bgr):
    check_bgr(conv.compressed_to_bgr(compressed(bgr, "png", ".png")), bgr)


def test_jpeg_decodes_close_to_the_original(bgr):
    out = conv.compressed_to_bgr(compressed(bgr, "jpeg", ".jpg", [cv2.IMWRITE_JPEG_QUALITY, 95]))
    assert out.shape == bgr.shape and out.dtype == np.uint8
    assert np.abs(out.astype(int) - bgr).mean() < 3


def test_gray_png_decodes_to_three_channels(bgr):
    gray = cv2.cvtColor(bgr, cv2.COLOR_BGR2GRAY)
    check_bgr(conv.compressed_to_bgr(compressed(gray, "png", ".png")), cv2.cvtColor(gray, cv2.COLOR_GRAY2BGR))


@pytest.mark.parametrize("bits", [8, 10, 12, 16])
def test_16bit_png_scales_like_the_raw_16bit_image(bgr, bits):
    """compressed_image_transport sends mono16 as a 16-bit PNG: it must not be cut to its top 8 bits (10-bit
    data came out almost black and its faces were missed), but scaled as the same raw mono16 image is."""
    gray16 = (cv2.cvtColor(bgr, cv2.COLOR_BGR2GRAY).astype(np.uint16) << (bits - 8)) + 1
    out = conv.compressed_to_bgr(compressed(gray16, "mono16; png compressed mono16", ".png"))
    np.testing.assert_array_equal(out, conv.image_to_bgr(make_image(gray16, "mono16")))
    assert np.abs(out.astype(int) - expected_16bit(gray16)).max() <= 1


@pytest.mark.parametrize("corrupt", ["random", "truncated", "empty"])
def test_corrupt_compressed_images_raise_a_clear_error(bgr, corrupt):
    msg = compressed(bgr, "png", ".png")
    data = bytes(msg.data)
    msg.data = {"random": np.random.default_rng(0).integers(0, 256, 5000, dtype=np.uint8).tobytes(),
                "truncated": data[: len(data) // 3],
                "empty": b""}[corrupt]
    with pytest.raises(ImageFormatError, match="no data|could not be decoded"):
        conv.compressed_to_bgr(msg)


def test_compressed_depth_is_rejected_with_a_reason(bgr):
    msg = compressed(bgr, "16UC1; compressedDepth png", ".png")
    with pytest.raises(ImageFormatError, match="compressed depth"):
        conv.compressed_to_bgr(msg)


# --- BGR -> Image ---------------------------------------------------------------------------------------

def test_bgr_to_image_msg_round_trip_keeps_pixels_and_header(bgr):
    h = header(frame="cam_optical", sec=42, nanosec=7)
    msg = deserialize_message(serialize_message(conv.bgr_to_image_msg(bgr, h)), Image)
    assert (msg.encoding, msg.width, msg.height, msg.step, msg.is_bigendian) == ("bgr8", 257, 301, 257 * 3, False)
    assert (msg.header.frame_id, msg.header.stamp.sec, msg.header.stamp.nanosec) == ("cam_optical", 42, 7)
    check_bgr(conv.image_to_bgr(msg), bgr)


def test_bgr_to_image_msg_accepts_a_non_contiguous_view(bgr):
    view = bgr[10:50:2, 5:60]
    check_bgr(conv.image_to_bgr(conv.bgr_to_image_msg(view, header())), np.ascontiguousarray(view))


@pytest.mark.parametrize("bad", [np.zeros((4, 5), np.uint8), np.zeros((4, 5, 3), np.float32),
                                 np.zeros((4, 5, 4), np.uint8), np.zeros((0, 5, 3), np.uint8)])
def test_bgr_to_image_msg_rejects_other_arrays(bad):
    with pytest.raises(ValueError):
        conv.bgr_to_image_msg(bad, header())


# --- CameraInfo -> CameraModel --------------------------------------------------------------------------

def camera_info(**fields):
    """A calibrated 640x480 camera, as a driver publishes it."""
    info = CameraInfo(header=header(), width=640, height=480, distortion_model="plumb_bob",
                      d=[-0.12, 0.05, 0.001, -0.002, 0.0],
                      k=[600.0, 0.0, 321.5, 0.0, 602.0, 239.5, 0.0, 0.0, 1.0],
                      r=[1.0, 0.0, 0.0, 0.0, 1.0, 0.0, 0.0, 0.0, 1.0],
                      p=[580.0, 0.0, 318.0, 0.0, 0.0, 585.0, 241.0, 0.0, 0.0, 0.0, 1.0, 0.0])
    for name, value in fields.items():
        setattr(info, name, value)
    return info


def test_camera_info_gives_k_d_and_size():
    model = conv.camera_info_to_model(camera_info())
    assert isinstance(model, CameraModel)
    np.testing.assert_array_equal(model.K, [[600, 0, 321.5], [0, 602, 239.5], [0, 0, 1]])
    np.testing.assert_array_equal(model.D, [-0.12, 0.05, 0.001, -0.002, 0.0])
    assert (model.distortion_model, model.width, model.height) == ("plumb_bob", 640, 480)


def test_camera_info_after_a_serialization_round_trip():
    info = deserialize_message(serialize_message(camera_info(distortion_model="rational_polynomial",
                                                             d=[0.1, -0.2, 0.0, 0.0, 0.01, 0.0, 0.0, 0.0])), CameraInfo)
    model = conv.camera_info_to_model(info)
    assert model.distortion_model == "rational_polynomial" and model.D.shape == (8,)


@pytest.mark.parametrize("lens", ["plumb_bob", "equidistant"])
def test_rectified_images_use_p_and_no_distortion(lens):
    """Rectified images are a pinhole whatever the raw lens (a fisheye's model kept would make them f-theta)."""
    info = camera_info(distortion_model=lens, d=[0.05, -0.02, 0.004, -0.001] if lens == "equidistant" else [])
    model = conv.camera_info_to_model(info, rectified=True)
    np.testing.assert_array_equal(model.K, [[580, 0, 318], [0, 585, 241], [0, 0, 1]])
    assert not model.has_distortion and model.distortion_model == "plumb_bob"


def test_binning_and_roi_describe_the_published_image():
    info = camera_info(binning_x=2, binning_y=2,
                       roi=RegionOfInterest(x_offset=100, y_offset=40, width=320, height=240))
    model = conv.camera_info_to_model(info)
    np.testing.assert_allclose(model.K, [[300, 0, (321.5 - 100) / 2], [0, 301, (239.5 - 40) / 2], [0, 0, 1]])
    assert (model.width, model.height) == (160, 120)


def test_all_zero_k_is_reported_as_uncalibrated():
    with pytest.raises(InputError, match="not calibrated"):
        conv.camera_info_to_model(camera_info(k=[0.0] * 9, d=[]))


def test_missing_distortion_model_without_coefficients_means_none():
    model = conv.camera_info_to_model(camera_info(distortion_model="", d=[]))
    assert model.distortion_model == "plumb_bob" and not model.has_distortion


@pytest.mark.parametrize("fields, reason", [
    (dict(distortion_model=""), "no distortion_model"),
    (dict(distortion_model="fisheye_unknown"), "unsupported distortion model"),
    (dict(k=[-600.0, 0.0, 320.0, 0.0, 600.0, 240.0, 0.0, 0.0, 1.0]), "non-positive focal"),
    (dict(d=[0.1, 0.2, 0.3]), "coefficients"),
])
def test_unusable_camera_info_raises_input_error(fields, reason):
    with pytest.raises(InputError, match=reason):
        conv.camera_info_to_model(camera_info(**fields))


# --- rotations, poses, transforms ---------------------------------------------------------------------

# A frontal face looking into the camera: face x = (0,0,-1), y = (1,0,0), z = (0,-1,0) in the optical frame.
R_FRONTAL = np.array([[0.0, 1.0, 0.0], [0.0, 0.0, -1.0], [-1.0, 0.0, 0.0]])

HALF_TURNS = [Rotation.from_rotvec(np.pi * np.asarray(axis, float) / np.linalg.norm(axis)).as_matrix()
              for axis in ([1, 0, 0], [0, 1, 0], [0, 0, 1], [1, 1, 0], [0, -1, 1], [1, 1, 1])]


@pytest.mark.parametrize("R", [np.eye(3), R_FRONTAL, *HALF_TURNS,
                               *Rotation.random(40, random_state=84).as_matrix()])
def test_quaternion_is_xyzw_with_nonnegative_w_and_the_same_rotation(R):
    q = conv.quaternion_xyzw_from_matrix(R)
    assert q.shape == (4,) and q[3] >= 0 and np.isclose(np.linalg.norm(q), 1.0)
    np.testing.assert_allclose(Rotation.from_quat(q).as_matrix(), R, atol=1e-12)   # scipy: scalar last
    ref = Rotation.from_matrix(R).as_quat()
    np.testing.assert_allclose(q, ref if ref[3] >= 0 else -ref, atol=1e-12)


def test_frontal_face_quaternion_value():
    # 120 degrees about (1, 1, -1)/sqrt(3): face x -> -z_optical, y -> x_optical, z -> -y_optical.
    np.testing.assert_allclose(conv.quaternion_xyzw_from_matrix(R_FRONTAL), [0.5, 0.5, -0.5, 0.5], atol=1e-12)


@pytest.mark.parametrize("R", [2.0 * np.eye(3), np.diag([1.0, 1.0, -1.0]), np.full((3, 3), np.nan),
                               np.eye(4), np.eye(3)[:2]])
def test_non_rotations_are_rejected(R):
    with pytest.raises(ValueError):
        conv.quaternion_xyzw_from_matrix(R)


def test_pose_msg_takes_column_vectors_from_opencv():
    pose = conv.pose_msg(R_FRONTAL, np.array([[0.05], [-0.02], [0.6]]))
    assert (pose.position.x, pose.position.y, pose.position.z) == pytest.approx((0.05, -0.02, 0.6))
    q = (pose.orientation.x, pose.orientation.y, pose.orientation.z, pose.orientation.w)
    assert q == pytest.approx((0.5, 0.5, -0.5, 0.5))


@pytest.mark.parametrize("t", [[1.0, 2.0], [0.0, np.inf, 1.0]])
def test_pose_msg_rejects_bad_translations(t):
    with pytest.raises(ValueError):
        conv.pose_msg(np.eye(3), t)


def test_transform_stamped_keeps_the_image_stamp_and_frame():
    h = header(frame="head_camera_optical_frame", sec=12, nanosec=34)
    tf = conv.transform_stamped(h, "face_abc", R_FRONTAL, [0.0, 0.1, 0.8])
    tf = deserialize_message(serialize_message(tf), type(tf))
    assert (tf.header.frame_id, tf.header.stamp.sec, tf.header.stamp.nanosec) == ("head_camera_optical_frame", 12, 34)
    assert tf.child_frame_id == "face_abc"
    assert (tf.transform.translation.x, tf.transform.translation.y, tf.transform.translation.z) == (0.0, 0.1, 0.8)
    r = tf.transform.rotation
    np.testing.assert_allclose(Rotation.from_quat([r.x, r.y, r.z, r.w]).as_matrix(), R_FRONTAL, atol=1e-12)


@pytest.mark.parametrize("parent, child", [("", "face_a"), ("cam", ""), ("cam", "cam")])
def test_transform_stamped_needs_two_frames(parent, child):
    with pytest.raises(ValueError, match="two different"):
        conv.transform_stamped(header(frame=parent), child, np.eye(3), [0, 0, 1])
