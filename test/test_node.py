"""The face3d node over REAL DDS: the node runs in its own process (`python -m face3d_ros.ros.main`, what the
`face3d-node` console script and `ros2 run face3d_ros face3d_node` run), this test process plays the camera
and the consumers.

Isolation: this module picks its own ROS_DOMAIN_ID and ROS_AUTOMATIC_DISCOVERY_RANGE=LOCALHOST; both sides
load config/fastdds_large_images.xml (FASTDDS_DEFAULT_PROFILES_FILE), the test's camera like the README tells
camera users, the node for its full-size debug_image (see test/ros_helpers.py, shared with
test_robustness.py). Bad input, faults and parameter validation in depth: test_robustness.py.

Data: face3d_ros/data/astronaut.png (NASA, public domain); test/data/negative_coffee.png (scikit-image coffee, CC0)
as the face-free image.

Three node processes: "main" (defaults, autostart), "lc" (namespace /lc, autostart:=false,
image_transport:=compressed, reliability:=reliable: the lifecycle, compressed and QoS-mismatch tests) and
short-lived ones that must fail to start.

    .venv/bin/python -m pytest -q test/test_node.py          (from the repository root; -s prints the numbers)
"""
from __future__ import annotations

import ast
import math
import signal
import statistics
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

rclpy = pytest.importorskip("rclpy")
pytest.importorskip("face3d_ros.msg", reason="messages not built: run scripts/setup_env.sh")
cv2 = pytest.importorskip("cv2")

from diagnostic_msgs.msg import DiagnosticArray  # noqa: E402
from lifecycle_msgs.msg import State, Transition  # noqa: E402
from lifecycle_msgs.srv import ChangeState, GetState  # noqa: E402
from rcl_interfaces.srv import DescribeParameters, GetParameters, SetParameters  # noqa: E402
from rclpy.parameter import Parameter  # noqa: E402
from rclpy.qos import qos_profile_sensor_data  # noqa: E402
from scipy.spatial.transform import Rotation  # noqa: E402
from sensor_msgs.msg import CompressedImage, Image  # noqa: E402
from tf2_msgs.msg import TFMessage  # noqa: E402
from visualization_msgs.msg import Marker, MarkerArray  # noqa: E402

from face3d_ros.msg import FaceMeshTopology, FacePose, FacePoseArray  # noqa: E402
from face3d_ros.ros import PROFILE_ENV_VARS, params  # noqa: E402

from ros_helpers import (ASTRONAUT, COFFEE, FRAME_ID, LATCHED, RELIABLE, REPO, START_TIMEOUT_S,  # noqa: E402
                         Camera, NodeProcess, Recorder, camera_info, diagnostics_values, faces_for, ros_context,
                         spin_for, spin_until, stamp_ns)


def rotation(pose) -> np.ndarray:
    q = pose.orientation
    return Rotation.from_quat([q.x, q.y, q.z, q.w]).as_matrix()


# ---------------------------------------------------------------------------------------------- fixtures
@pytest.fixture(scope="module")
def ros(tmp_path_factory):
    """rclpy in this process on this module's own domain, plus the environment node processes get."""
    with ros_context(tmp_path_factory.mktemp("face3d_node_logs")) as r:
        yield r


@pytest.fixture(scope="module")
def main_node(ros):
    """The node with its defaults (autostart), root namespace; stopped with SIGINT by the last test."""
    node = NodeProcess("main", [], ros.env, ros.log_dir)
    ok = spin_until(ros.executor, lambda: not node.alive() or ros.node.count_subscribers("/image") > 0,
                    START_TIMEOUT_S)
    assert ok and node.alive(), f"the node did not start:\n{node.log()}"
    yield node
    node.stop(signal.SIGINT)


@pytest.fixture(scope="module")
def camera(ros, main_node):
    cam = Camera(ros.node)
    assert spin_until(ros.executor, cam.connected, 10.0), "the node's subscriptions were not discovered"
    return cam


@pytest.fixture(scope="module")
def astronaut():
    image = cv2.imread(str(ASTRONAUT), cv2.IMREAD_COLOR)
    assert image is not None and image.shape == (512, 512, 3)
    return image


@pytest.fixture(scope="module")
def astronaut_run(ros, camera, astronaut):
    """Stream the astronaut (fx = fy = 512, centred) until faces, TF, markers and a debug image came back."""
    subs = {"faces": Recorder(ros.node, FacePoseArray, "/faces", RELIABLE),
            "tf": Recorder(ros.node, TFMessage, "/tf", RELIABLE),
            "markers": Recorder(ros.node, MarkerArray, "/markers", RELIABLE),
            "debug": Recorder(ros.node, Image, "/debug_image", qos_profile_sensor_data),
            "topology": Recorder(ros.node, FaceMeshTopology, "/mesh_topology", LATCHED)}

    def complete():
        return (any(len(m.faces) == 1 for m in subs["faces"].messages) and subs["tf"].messages
                and any(m.markers for m in subs["markers"].messages) and subs["debug"].messages
                and subs["topology"].messages)

    spin_for(ros.executor, 0.3)   # let the node discover the new subscriptions
    stamps = camera.stream(ros.executor, astronaut, 512.0, frames=60, rate_hz=10.0, until=complete)
    spin_until(ros.executor, complete, 3.0)
    for sub in subs.values():
        sub.close()
    return {"stamps": stamps, **{k: v.messages for k, v in subs.items()}}


# ---------------------------------------------------------------------------------------------- tests
def test_faces_message_carries_the_image_header_and_one_face(astronaut_run):
    stamps = set(astronaut_run["stamps"])
    messages = astronaut_run["faces"]
    assert messages, "no FacePoseArray received"
    for msg in messages:   # one message per processed image, each with that image's header
        assert stamp_ns(msg.header.stamp) in stamps
        assert msg.header.frame_id == FRAME_ID
        assert 0.0 < msg.processing_latency < 1.0
    with_face = [m for m in messages if m.faces]
    assert with_face, "the astronaut was never published as a face"
    assert all(len(m.faces) == 1 for m in with_face)
    face = with_face[-1].faces[0]
    assert face.header == with_face[-1].header
    assert face.id and face.id[0].isalpha()
    assert face.track_state in (FacePose.STATE_TRACKED, FacePose.STATE_COASTING)
    assert len(face.landmarks_2d) == 478 * 2 and len(face.vertices) == 478 * 3
    roi = face.bbox
    assert 0 < roi.width <= 512 and 0 < roi.height <= 512 and roi.x_offset + roi.width <= 512
    assert 0.5 <= face.detection_score <= 1.0 and 0.5 <= face.landmark_confidence <= 1.0


def test_pose_is_plausible(astronaut_run):
    face = [m for m in astronaut_run["faces"] if m.faces][-1].faces[0]
    p = face.pose.pose.position
    assert 0.2 < p.z < 3.0, f"face at z = {p.z} m"
    assert math.hypot(p.x, p.y) < p.z
    R = rotation(face.pose.pose)
    assert R[2, 0] < -0.7, f"face x axis {R[:, 0]} does not point back at the camera"
    cov = np.asarray(face.pose.covariance).reshape(6, 6)
    assert np.all(np.diag(cov) > 0) and np.count_nonzero(cov - np.diag(np.diag(cov))) == 0
    vertices = np.asarray(face.vertices).reshape(-1, 3)
    assert np.all(vertices[:, 2] > 0.1) and np.linalg.norm(vertices.mean(axis=0) - [p.x, p.y, p.z]) < 0.15


def test_tf_face_and_gaze_frames(astronaut_run):
    face_msgs = [m for m in astronaut_run["faces"] if m.faces]
    by_stamp = {stamp_ns(m.header.stamp): m for m in face_msgs}
    transforms = [t for msg in astronaut_run["tf"] for t in msg.transforms]
    matched = [t for t in transforms if stamp_ns(t.header.stamp) in by_stamp]
    assert matched, "no /tf transform carries the stamp of an image with a face"
    face = by_stamp[stamp_ns(matched[0].header.stamp)].faces[0]
    children = {t.child_frame_id: t for t in matched if stamp_ns(t.header.stamp) == stamp_ns(matched[0].header.stamp)}
    assert set(children) == {f"face_{face.id}", f"gaze_{face.id}"}
    tf_face, tf_gaze = children[f"face_{face.id}"], children[f"gaze_{face.id}"]
    assert tf_face.header.frame_id == FRAME_ID
    assert tf_face.transform.translation.z == pytest.approx(face.pose.pose.position.z)
    R_face = Rotation.from_quat([getattr(tf_face.transform.rotation, a) for a in "xyzw"]).as_matrix()
    R_gaze = Rotation.from_quat([getattr(tf_gaze.transform.rotation, a) for a in "xyzw"]).as_matrix()
    np.testing.assert_allclose(R_gaze[:, 2], R_face[:, 0], atol=1e-6)    # gaze z = face x
    np.testing.assert_allclose(R_gaze[:, 0], -R_face[:, 1], atol=1e-6)   # gaze x = the person's right
    assert R_gaze[1, 1] > 0.7                                            # gaze y ~ image down


def test_markers_debug_image_and_topology(astronaut_run):
    markers = [mk for msg in astronaut_run["markers"] for mk in msg.markers]
    meshes = [mk for mk in markers if mk.type == Marker.TRIANGLE_LIST and mk.action == Marker.ADD]
    assert meshes, "no TRIANGLE_LIST marker"
    mesh = meshes[-1]
    assert mesh.header.frame_id == FRAME_ID and mesh.ns and len(mesh.points) % 3 == 0 and len(mesh.points) > 1000
    assert mesh.lifetime.sec == 0 and mesh.lifetime.nanosec > 0
    assert {Marker.ARROW, Marker.TEXT_VIEW_FACING} <= {mk.type for mk in markers if mk.ns == mesh.ns}
    debug = astronaut_run["debug"][-1]
    assert (debug.width, debug.height, debug.encoding) == (512, 512, "bgr8")
    assert debug.header.frame_id == FRAME_ID and stamp_ns(debug.header.stamp) in set(astronaut_run["stamps"])
    topology = astronaut_run["topology"][-1]
    assert topology.vertex_count == 478 and len(topology.triangles) % 3 == 0
    assert max(topology.triangles) < 478


def test_face_free_image_gives_empty_faces_and_deletes_the_markers(ros, camera, astronaut, astronaut_run):
    coffee = cv2.imread(str(COFFEE), cv2.IMREAD_COLOR)
    faces = Recorder(ros.node, FacePoseArray, "/faces", RELIABLE)
    markers = Recorder(ros.node, MarkerArray, "/markers", RELIABLE)
    face_id = [m for m in astronaut_run["faces"] if m.faces][-1].faces[0].id
    spin_for(ros.executor, 0.3)
    camera.stream(ros.executor, astronaut, 512.0, frames=20, rate_hz=10.0,   # markers for the face again
                  until=lambda: any(mk.ns == face_id for m in markers.messages for mk in m.markers))
    spin_for(ros.executor, 0.7)   # > tracking.max_gap_s: the astronaut's track ends at the next image
    stamps = camera.stream(ros.executor, coffee, 600.0, frames=5, rate_hz=10.0)
    spin_until(ros.executor, lambda: len(faces_for(faces, stamps)) >= 4, 3.0)
    faces.close()
    markers.close()
    received = faces_for(faces, stamps)
    assert len(received) >= 4, "the node stopped publishing faces for face-free images"
    assert all(len(m.faces) == 0 for m in received)
    deleted = {(mk.ns, mk.id) for m in markers.messages for mk in m.markers if mk.action == Marker.DELETE}
    assert (face_id, 0) in deleted, f"no DELETE of the mesh of face {face_id}"


def test_zero_camera_matrix_skips_images_until_a_valid_camera_info(ros, camera, astronaut, main_node):
    faces = Recorder(ros.node, FacePoseArray, "/faces", RELIABLE)
    header = camera.header()
    for _ in range(3):
        camera.info_pub.publish(camera_info(512, 512, 512.0, header, zero=True))
        spin_for(ros.executor, 0.1)
    bad = camera.stream(ros.executor, astronaut, 512.0, frames=6, rate_hz=10.0, zero_k=True)
    spin_for(ros.executor, 0.5)
    assert faces_for(faces, bad) == [], "images were processed with an all-zero K"
    assert main_node.alive()
    assert "all zeros" in main_node.log()
    good = camera.stream(ros.executor, astronaut, 512.0, frames=40, rate_hz=10.0,
                         until=lambda: any(m.faces for m in faces_for(faces, camera.sent[-40:])))
    faces.close()
    assert any(m.faces for m in faces_for(faces, good)), "no face after a valid CameraInfo came back"


def test_bad_images_and_backward_stamps_are_logged_and_survived(ros, camera, astronaut, main_node):
    faces = Recorder(ros.node, FacePoseArray, "/faces", RELIABLE)
    camera.stream(ros.executor, astronaut, 512.0, frames=3, rate_hz=10.0)
    broken = Image(header=camera.header(), height=512, width=512, encoding="bgr8", step=1536, data=bytes(1000))
    odd = Image(header=camera.header(), height=4, width=4, encoding="weird16", step=8, data=bytes(32))
    for msg in (broken, odd, broken):
        camera.image_pub.publish(msg)
        spin_for(ros.executor, 0.1)
    old = camera.publish(astronaut, 512.0, age_s=30.0)   # a looping bag: the stamp goes back 30 s
    assert spin_until(ros.executor, lambda: faces_for(faces, [stamp_ns(old.stamp)]), 3.0)
    good = camera.stream(ros.executor, astronaut, 512.0, frames=3, rate_hz=10.0)
    spin_until(ros.executor, lambda: len(faces_for(faces, good)) == 3, 2.0)
    faces.close()
    assert len(faces_for(faces, good)) == 3 and main_node.alive()
    log = main_node.log()
    assert "image skipped: bgr8 image 512x512: data holds 1000 bytes" in log
    assert log.count("data holds 1000 bytes") == 1, "the same problem was logged more than once in 5 s"
    assert "unsupported weird16 image" in log, "a second kind of problem was hidden by the first"
    assert "went backwards" in log and "Traceback" not in log


def test_bad_parameter_values_are_rejected_with_a_reason(ros, main_node):
    client = ros.node.create_client(SetParameters, "/face3d_node/set_parameters")
    getter = ros.node.create_client(GetParameters, "/face3d_node/get_parameters")
    assert client.wait_for_service(timeout_sec=10.0) and getter.wait_for_service(timeout_sec=10.0)

    def set_one(name, value):
        future = client.call_async(SetParameters.Request(parameters=[Parameter(name, value=value).to_parameter_msg()]))
        assert spin_until(ros.executor, future.done, 5.0)
        return future.result().results[0]

    bad = {"detector.min_detection_score": [1.5, "high", float("nan")],
           "tracking.min_hits": [0, 2.5],
           "backend.backend": ["cpu"],        # read-only: needs a restart (or cleanup + a new start)
           "reliability": ["reliable"],
           "smoothing.beta": [-1.0]}
    for name, values in bad.items():
        for value in values:
            result = set_one(name, value)
            assert not result.successful, f"{name} := {value!r} was accepted"
            assert result.reason, f"{name} := {value!r} rejected without a reason"
    good = set_one("smoothing.beta", 0.7)
    assert good.successful, good.reason
    future = getter.call_async(GetParameters.Request(names=["smoothing.beta", "detector.min_detection_score"]))
    assert spin_until(ros.executor, future.done, 5.0)
    default_score = params.SPECS["detector.min_detection_score"].default
    assert [v.double_value for v in future.result().values] == [0.7, default_score]
    assert set_one("smoothing.beta", 0.5).successful
    describe = ros.node.create_client(DescribeParameters, "/face3d_node/describe_parameters")
    assert describe.wait_for_service(timeout_sec=10.0)
    future = describe.call_async(DescribeParameters.Request(names=["detector.min_detection_score",
                                                                   "backend.backend"]))
    assert spin_until(ros.executor, future.done, 5.0)
    score, backend = future.result().descriptors
    assert score.description and not score.read_only
    assert (score.floating_point_range[0].from_value, score.floating_point_range[0].to_value) == (0.0, 1.0)
    assert backend.read_only and "auto, cpu, cuda, tensorrt" in backend.description
    ros.node.destroy_client(describe)
    ros.node.destroy_client(client)
    ros.node.destroy_client(getter)
    assert main_node.alive()


def test_full_size_best_effort_frames_at_30_hz_all_reach_the_node(ros, camera, astronaut):
    """100 bgr8 640x480 frames (921,600 B each) at 30 Hz from a best-effort publisher that uses the README's
    Fast DDS profile, into the node's default subscription (best effort, KEEP_LAST 1).

    Measurement: the node counts (diagnostics) the images its callback took (frames_received) and the samples
    DDS reports lost on the way (frames_lost_dds, the subscription's message-lost event; the next test shows
    it counts the losses of a publisher without the profile). sent - lost = the frames that reached the
    subscription: all 100 must. Every image the callback takes yields one FacePoseArray with its stamp, so
    the faces that come back must equal frames_received. frames_received itself may fall short of 100 only
    when the node is busier than 33 ms per image (CPU contention): KEEP_LAST 1 then replaces the waiting image
    by the newer one, by design; it must stay close to 100 (the node needs ~10-20 ms per image here).
    """
    frame = np.full((480, 640, 3), 90, np.uint8)
    frame[:, 64:576] = astronaut[16:496]
    faces = Recorder(ros.node, FacePoseArray, "/faces", RELIABLE)
    diagnostics = Recorder(ros.node, DiagnosticArray, "/diagnostics", RELIABLE)
    # Warm-up: until the node uses this size's CameraInfo (faces come back for these frames).
    warm = camera.stream(ros.executor, frame, 512.0, frames=90, rate_hz=30.0,
                         until=lambda: sum(bool(m.faces) for m in faces_for(faces, camera.sent[-90:])) >= 5)
    assert any(m.faces for m in faces_for(faces, warm)), "the node never saw a face in the 640x480 frames"
    assert spin_until(ros.executor, lambda: len(diagnostics.messages) >= 2, 4.0)
    before = diagnostics_values(diagnostics)

    start = time.monotonic()
    stamps = camera.stream(ros.executor, frame, 512.0, frames=100, rate_hz=30.0)
    send_s = time.monotonic() - start
    spin_until(ros.executor, lambda: len(faces_for(faces, stamps)) == 100, 3.0)
    n_after = len(diagnostics.messages)   # wait for two reports published after the last image was processed
    assert spin_until(ros.executor, lambda: len(diagnostics.messages) >= n_after + 2, 5.0)
    after = diagnostics_values(diagnostics)
    faces.close()
    diagnostics.close()

    received = faces_for(faces, stamps)
    arrival = {stamp_ns(m.header.stamp): t for t, m in faces.items}
    end_to_end_ms = [1e3 * (arrival[s] - s / 1e9) for s in stamps if s in arrival]
    node_ms = [1e3 * m.processing_latency for m in received]
    frames_received = int(after["frames_received"]) - int(before["frames_received"])
    lost = int(after["frames_lost_dds"]) - int(before["frames_lost_dds"])
    print(f"\n[30 Hz 640x480 bgr8] sent 100 in {send_s:.2f} s; DDS lost {lost}; node callback took "
          f"{frames_received}; faces messages {len(received)} ({sum(bool(m.faces) for m in received)} with the "
          f"face); node latency median {statistics.median(node_ms):.1f} ms p95 {np.percentile(node_ms, 95):.1f} "
          f"ms; image stamp -> FacePoseArray received median {statistics.median(end_to_end_ms):.1f} ms p95 "
          f"{np.percentile(end_to_end_ms, 95):.1f} ms; backend {after['backend']}")
    assert lost == 0, f"DDS lost {lost} of 100 frames (diagnostics: {after})"
    assert len(received) == frames_received, "an image the node took produced no FacePoseArray"
    assert frames_received >= 85, f"the node took only {frames_received} of 100 frames (diagnostics: {after})"
    assert sum(bool(m.faces) for m in received) >= len(received) - 2


LOSSY_CAMERA = """
import sys, time, numpy as np, rclpy
from rclpy.qos import qos_profile_sensor_data
from sensor_msgs.msg import CameraInfo, Image
from std_msgs.msg import Header
rclpy.init()
node = rclpy.create_node("lossy_camera")
pub = node.create_publisher(Image, "image", qos_profile_sensor_data)
deadline = time.time() + 10
while pub.get_subscription_count() == 0 and time.time() < deadline:
    rclpy.spin_once(node, timeout_sec=0.05)
time.sleep(0.5)
data = np.full(480 * 640 * 3, 90, np.uint8).tobytes()
for _ in range(int(sys.argv[1])):
    header = Header(stamp=node.get_clock().now().to_msg(), frame_id="lossy")
    pub.publish(Image(header=header, height=480, width=640, encoding="bgr8", step=1920, data=data))
    time.sleep(1 / 30)
print("sent", sys.argv[1])
"""


def test_frames_lost_by_dds_are_counted_and_reported(ros, main_node, camera):
    """The control of the test above: the same frames from a publisher WITHOUT the profile are lost, and the
    node counts them and says where to look."""
    diagnostics = Recorder(ros.node, DiagnosticArray, "/diagnostics", RELIABLE)
    assert spin_until(ros.executor, lambda: diagnostics.messages, 3.0)
    before = int(diagnostics_values(diagnostics)["frames_lost_dds"])
    env = {k: v for k, v in ros.env.items() if k not in PROFILE_ENV_VARS}
    lossy = subprocess.Popen([sys.executable, "-c", LOSSY_CAMERA, "60"], cwd=REPO, env=env,
                             stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    assert spin_until(ros.executor, lambda: lossy.poll() is not None, 30.0), "the lossy camera did not finish"
    assert lossy.returncode == 0, lossy.stdout.read()
    n = len(diagnostics.messages)
    spin_until(ros.executor, lambda: len(diagnostics.messages) >= n + 2, 4.0)
    diagnostics.close()
    lost = int(diagnostics_values(diagnostics)["frames_lost_dds"]) - before
    print(f"\n[30 Hz 640x480 bgr8 without the Fast DDS profile] DDS lost {lost} of 60")
    assert lost > 30
    assert "Large images over DDS" in main_node.log()


def test_startup_with_bad_values_fails_with_the_reasons(ros):
    bad_values = NodeProcess("bad_values", ["-r", "__ns:=/bad", "-p", "reliability:=sideways",
                                            "-p", "detector.max_faces:=1000"], ros.env, ros.log_dir)
    missing_models = NodeProcess("missing_models", ["-r", "__ns:=/missing", "-p",
                                                    "backend.models_dir:=/nonexistent/face3d_models"],
                                 ros.env, ros.log_dir)
    for proc in (bad_values, missing_models):
        try:
            proc.proc.wait(START_TIMEOUT_S)
        except subprocess.TimeoutExpired:
            proc.stop(signal.SIGKILL)
    assert bad_values.proc.returncode == 1, bad_values.log()
    log = bad_values.log()
    assert "reliability must be one of best_effort, reliable" in log and "max_faces" in log
    assert missing_models.proc.returncode == 1, missing_models.log()
    assert "models not found" in missing_models.log()
    for proc in (bad_values, missing_models):
        assert "Traceback" not in proc.stderr.read_text()


# ------------------------------------------------------------------ lifecycle, compressed images, QoS
@pytest.fixture(scope="module")
def lc_node(ros):
    node = NodeProcess("lc", ["-r", "__ns:=/lc", "-p", "autostart:=false", "-p", "image_transport:=compressed",
                              "-p", "reliability:=reliable"], ros.env, ros.log_dir)
    change = ros.node.create_client(ChangeState, "/lc/face3d_node/change_state")
    get = ros.node.create_client(GetState, "/lc/face3d_node/get_state")
    assert spin_until(ros.executor, lambda: change.service_is_ready() and get.service_is_ready() or not node.alive(),
                      START_TIMEOUT_S), node.log()

    def call(client, request):
        future = client.call_async(request)
        assert spin_until(ros.executor, future.done, 60.0), "no answer from the lifecycle service"
        return future.result()

    node.transition = lambda tid: call(change, ChangeState.Request(transition=Transition(id=tid))).success
    node.state = lambda: call(get, GetState.Request()).current_state.id
    yield node
    node.stop(signal.SIGTERM)


def test_lifecycle_transitions_twice(ros, lc_node):
    assert lc_node.state() == State.PRIMARY_STATE_UNCONFIGURED
    topic = "/lc/image/compressed"
    assert ros.node.count_subscribers(topic) == 0
    for _ in range(2):
        assert lc_node.transition(Transition.TRANSITION_CONFIGURE), lc_node.log()
        assert lc_node.state() == State.PRIMARY_STATE_INACTIVE
        assert lc_node.transition(Transition.TRANSITION_ACTIVATE)
        assert lc_node.state() == State.PRIMARY_STATE_ACTIVE
        assert spin_until(ros.executor, lambda: ros.node.count_subscribers(topic) == 1, 5.0)
        assert lc_node.transition(Transition.TRANSITION_DEACTIVATE)
        assert lc_node.state() == State.PRIMARY_STATE_INACTIVE
        assert spin_until(ros.executor, lambda: ros.node.count_subscribers(topic) == 0, 5.0)
        assert lc_node.transition(Transition.TRANSITION_CLEANUP)
        assert lc_node.state() == State.PRIMARY_STATE_UNCONFIGURED
    assert lc_node.alive()
    assert "Traceback" not in lc_node.log()


@pytest.fixture(scope="module")
def lc_active(ros, lc_node):
    if lc_node.state() == State.PRIMARY_STATE_UNCONFIGURED:
        assert lc_node.transition(Transition.TRANSITION_CONFIGURE), lc_node.log()
    if lc_node.state() == State.PRIMARY_STATE_INACTIVE:
        assert lc_node.transition(Transition.TRANSITION_ACTIVATE), lc_node.log()
    assert lc_node.state() == State.PRIMARY_STATE_ACTIVE
    return lc_node


def test_compressed_images(ros, lc_active, astronaut):
    cam = Camera(ros.node, ns="/lc", compressed=True, reliable=True)
    assert spin_until(ros.executor, cam.connected, 10.0)
    faces = Recorder(ros.node, FacePoseArray, "/lc/faces", RELIABLE)
    spin_for(ros.executor, 0.3)
    stamps = cam.stream(ros.executor, astronaut, 512.0, frames=40, rate_hz=10.0,
                        until=lambda: any(m.faces for m in faces.messages))
    cam.image_pub.publish(CompressedImage(header=cam.header(), format="jpeg", data=b"\xff\xd8 not a jpeg"))
    spin_until(ros.executor, lambda: "could not be decoded" in lc_active.log(), 3.0)
    faces.close()
    assert "could not be decoded" in lc_active.log() and lc_active.alive()
    received = faces_for(faces, stamps)
    assert received and all(m.header.frame_id == FRAME_ID for m in received)
    with_face = [m for m in received if m.faces]
    assert with_face and len(with_face[-1].faces) == 1
    assert 0.2 < with_face[-1].faces[0].pose.pose.position.z < 3.0
    for pub in (cam.image_pub, cam.info_pub):
        ros.node.destroy_publisher(pub)


def test_qos_mismatch_is_reported(ros, lc_active):
    pub = ros.node.create_publisher(CompressedImage, "/lc/image/compressed", qos_profile_sensor_data)
    found = spin_until(ros.executor, lambda: "QoS mismatch" in lc_active.log(), 5.0)
    ros.node.destroy_publisher(pub)
    assert found, lc_active.log()
    line = next(ln for ln in lc_active.log().splitlines() if "QoS mismatch" in ln)
    assert "ERROR" in line and "best effort" in line and "/lc/image/compressed" in line
    assert "reliability:=best_effort" in line


# ---------------------------------------------------------------------------------------------- shutdown
def test_sigint_ends_the_node_cleanly(main_node):
    assert main_node.alive()
    assert main_node.stop(signal.SIGINT) == 0
    assert "Traceback" not in main_node.stderr.read_text()


def test_sigterm_ends_the_node_cleanly(lc_node):
    assert lc_node.alive()
    assert lc_node.stop(signal.SIGTERM) == 0
    assert "Traceback" not in lc_node.stderr.read_text()


# ---------------------------------------------------------------------------------------------- files
def test_params_file_lists_every_parameter_with_its_default():
    import yaml
    data = yaml.safe_load((REPO / "config" / "face3d.yaml").read_text())
    values = data["/**"]["ros__parameters"]
    missing, unknown = sorted(set(params.SPECS) - set(values)), sorted(set(values) - set(params.SPECS))
    assert not missing and not unknown, (f"config/face3d.yaml is out of date with PipelineConfig/NODE_PARAMS: add "
                                         f"{missing} (with their description as a comment), remove {unknown}")
    for name, value in values.items():
        assert value == params.SPECS[name].default, f"config/face3d.yaml: {name} is {value!r}, default " \
                                                    f"{params.SPECS[name].default!r}"
    text = (REPO / "config" / "face3d.yaml").read_text().splitlines()
    for i, line in enumerate(text):   # every parameter line follows a comment
        if line.strip() and not line.strip().startswith("#") and ":" in line and line.startswith("    "):
            assert text[i - 1].strip().startswith("#"), f"config/face3d.yaml: no comment above {line.strip()}"


def test_launch_file_references_the_real_executable_params_and_profile():
    source = (REPO / "launch" / "face3d.launch.py").read_text()
    tree = ast.parse(source)
    compile(tree, "face3d.launch.py", "exec")
    strings = {n.value for n in ast.walk(tree) if isinstance(n, ast.Constant) and isinstance(n.value, str)}
    assert "face3d_node" in strings and "face3d_ros" in strings
    assert any(s.endswith("face3d.yaml") for s in strings) or "face3d.yaml" in source
    assert "fastdds_large_images.xml" in source
    assert {"FASTDDS_DEFAULT_PROFILES_FILE", "FASTRTPS_DEFAULT_PROFILES_FILE"} <= strings   # Kilted and Jazzy
    declared = {n.args[0].value for n in ast.walk(tree) if isinstance(n, ast.Call)
                and getattr(n.func, "id", "") == "DeclareLaunchArgument"}
    assert {"image", "camera_info", "namespace", "params_file", "use_lifecycle", "log_level"} <= declared
    # the executable the launch file names is the one CMake installs for `ros2 run`
    assert '"face3d_node:face3d_ros.ros.main"' in (REPO / "CMakeLists.txt").read_text()
    for name in ("face3d.yaml", "fastdds_large_images.xml", "face3d.rviz"):
        assert (REPO / "config" / name).is_file()


def test_install_puts_the_launch_file_config_and_models_in_the_package_share():
    """What `ros2 launch face3d_ros face3d.launch.py` and the node read from share/face3d_ros, as the build
    installed it (colcon's install/ or, on the pip route, <venv>/share); the models' developer scripts stay out.
    The launch file was once left out by a pattern meant for those scripts."""
    share = Path(sys.prefix) / "share" / "face3d_ros"
    if not (share / "package.xml").is_file():
        pytest.skip(f"face3d_ros is not installed with its ROS parts in {sys.prefix} (scripts/setup_env.sh does)")
    assert (share / "launch" / "face3d.launch.py").read_text() == (REPO / "launch" / "face3d.launch.py").read_text()
    for name in ("face3d.yaml", "fastdds_large_images.xml", "face3d.rviz"):
        assert (share / "config" / name).is_file(), name
    assert {p.name for p in (REPO / "models").glob("*.onnx")} <= {p.name for p in (share / "models").glob("*.onnx")}
    assert not list((share / "models").glob("*.py"))
