"""Reliability of the node over REAL DDS: bad input, faults and bad parameters never crash it or lose good data.

The node runs in its own processes (test/ros_helpers.py, shared with test_node.py and
benchmarks/robustness.py), all started at once by the `nodes` fixture:
  rob      /rob, raw images, the defaults
  robc     /robc, image_transport:=compressed
  models   /models, autostart:=false, backend.models_dir:=<a temporary copy of models/>, backend.backend:=cuda
  strict   backend.backend:=tensorrt, backend.strict:=true: must exit 1 with the reason (unless TensorRT runs here)
  badstart one bad value of each kind at start-up: must exit 1 with every reason

Fuzzing (hypothesis, derandomized, bounded examples, deadline=None): every example sends 0-3 malformed
inputs of the kinds in ros_helpers.BAD_INPUTS (bad encodings, step/data length disagreeing, 0x0, absurd
declared sizes, corrupt JPEG/PNG, NaN/inf/zero K, wrong D, ...) and then ONE good frame (CameraInfo + image in
any supported encoding: bgr8, rgb8, bgra8, rgba8, mono8, mono16/16UC1 little and big endian, padded rows; jpeg
and png) with a stamp of its own, and waits for the node's FacePoseArray with that stamp: it must hold one face.

    .venv/bin/python -m pytest -q test/test_robustness.py        (-s prints the counts)
"""
from __future__ import annotations

import math
import random
import re
import shutil
import signal

import numpy as np
import pytest

rclpy = pytest.importorskip("rclpy")
pytest.importorskip("face3d_ros.msg", reason="messages not built: run scripts/setup_env.sh")
hypothesis = pytest.importorskip("hypothesis")
ort = pytest.importorskip("onnxruntime")

from diagnostic_msgs.msg import DiagnosticArray, DiagnosticStatus  # noqa: E402
from hypothesis import HealthCheck, given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402
from lifecycle_msgs.msg import State, Transition  # noqa: E402
from lifecycle_msgs.srv import ChangeState, GetState  # noqa: E402
from rcl_interfaces.srv import GetParameters, SetParameters  # noqa: E402
from rclpy.parameter import Parameter, parameter_value_to_python  # noqa: E402

from face3d_ros.ros import params  # noqa: E402
from face3d_ros.ros.node import THROTTLE_S  # noqa: E402

from ros_helpers import (ASTRONAUT, BAD_INPUTS, RELIABLE, REPO, START_TIMEOUT_S, Draw,  # noqa: E402
                         NodeProcess, RandomDraw, Recorder, Stream, diagnostics_values, header_at, load_bgr,
                         ros_context, spin_until)

GOOD_SIDE = 192              # small frames: ~8 ms a frame in the node
MIN_HITS = params.SPECS["tracking.min_hits"].default
CUDA = "CUDAExecutionProvider" in ort.get_available_providers()
TENSORRT = "TensorrtExecutionProvider" in ort.get_available_providers()
FUZZ = settings(max_examples=50, deadline=None, derandomize=True, database=None, print_blob=True,
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture,
                                       HealthCheck.data_too_large])


class HypothesisDraw(Draw):
    def __init__(self, data):
        self.data = data

    def int(self, lo: int, hi: int) -> int:
        return self.data.draw(st.integers(lo, hi))

    def choice(self, options):
        return self.data.draw(st.sampled_from(list(options)))


# ---------------------------------------------------------------------------------------------- fixtures
@pytest.fixture(scope="module")
def ros(tmp_path_factory):
    with ros_context(tmp_path_factory.mktemp("face3d_robustness_logs")) as r:
        yield r


STARTUP_BAD = {   # parameter -> (the bad value as --ros-args gives it, a piece of the reason)
    "detector.max_faces": ("abc", "detector.max_faces must be an integer"),       # wrong type
    "backend.threads": ("2.5", "backend.threads"),                                # double for an integer
    "tracking.max_gap_s": ("-1.0", "tracking.max_gap_s"),                         # below the range
    "detector.nms_iou": ("1.5", "detector.nms_iou"),                              # above the range
    "smoothing.beta": (".nan", "smoothing.beta must be a number, got NaN"),     # NaN
    "backend.backend": ("gpu", "backend.backend must be one of auto, cpu, cuda, tensorrt"),   # unknown choice
    "landmarks.refine_iris": ("maybe", "landmarks.refine_iris must be true or false"),  # string for a bool
}


@pytest.fixture(scope="module")
def nodes(ros, tmp_path_factory):
    """Every node process of this module, started at once (they start in parallel)."""
    models = tmp_path_factory.mktemp("models_copy") / "models"
    shutil.copytree(REPO / "models", models, ignore=shutil.ignore_patterns("*.py", "__pycache__"))
    bad = [arg for name, (value, _) in STARTUP_BAD.items() for arg in ("-p", f"{name}:={value}")]
    procs = {
        "rob": NodeProcess("rob", ["-r", "__ns:=/rob"], ros.env, ros.log_dir),
        "robc": NodeProcess("robc", ["-r", "__ns:=/robc", "-p", "image_transport:=compressed"], ros.env, ros.log_dir),
        "models": NodeProcess("models", ["-r", "__ns:=/models", "-p", "autostart:=false",
                                         "-p", f"backend.models_dir:={models}", "-p", "backend.backend:=cuda"],
                              ros.env, ros.log_dir),
        "strict": NodeProcess("strict", ["-r", "__ns:=/strict", "-p", "backend.backend:=tensorrt",
                                         "-p", "backend.strict:=true"], ros.env, ros.log_dir),
        "badstart": NodeProcess("badstart", ["-r", "__ns:=/badstart", *bad], ros.env, ros.log_dir),
    }
    procs["models"].models_dir = models
    yield procs
    for proc in procs.values():
        proc.stop(signal.SIGINT)


def _active(ros, node: NodeProcess, topic: str) -> NodeProcess:
    ok = spin_until(ros.executor, lambda: not node.alive() or ros.node.count_subscribers(topic) > 0,
                    START_TIMEOUT_S)
    assert ok and node.alive(), f"the node did not start:\n{node.log()}"
    return node


@pytest.fixture(scope="module")
def rob(ros, nodes):
    return _active(ros, nodes["rob"], "/rob/image")


@pytest.fixture(scope="module")
def robc(ros, nodes):
    return _active(ros, nodes["robc"], "/robc/image/compressed")


@pytest.fixture(scope="module")
def good():
    return load_bgr(ASTRONAUT, GOOD_SIDE)


@pytest.fixture(scope="module")
def raw_stream(ros, rob, good):
    stream = Stream(ros, "/rob", compressed=False, good_bgr=good)
    warm_up(stream)
    yield stream
    stream.close()


@pytest.fixture(scope="module")
def compressed_stream(ros, robc, good):
    stream = Stream(ros, "/robc", compressed=True, good_bgr=good)
    warm_up(stream)
    yield stream
    stream.close()


def warm_up(stream: Stream) -> None:
    """tracking.min_hits (2) frames: a new face is published from its second image on."""
    results = [stream.send_frame(timeout=15.0)[1] for _ in range(MIN_HITS)]
    assert all(results) and len(results[-1].faces) == 1, "the node does not find the face in the good frame"


def after_reset(results: list, what: str) -> None:
    """Results of frames after a tracking restart: all there; the face from the min_hits-th on."""
    assert all(r is not None for r in results), f"a frame was not processed after {what}"
    assert all(len(r.faces) <= 1 for r in results[:MIN_HITS - 1]), f"a face twice after {what}"
    assert all(len(r.faces) == 1 for r in results[MIN_HITS - 1:]), f"no face after {what}"


def fresh_diagnostics(ros, ns: str) -> dict:
    """The node's diagnostics values from a report published after this call."""
    recorder = Recorder(ros.node, DiagnosticArray, "/diagnostics", RELIABLE)
    name = f"{ns.strip('/')}/face3d_node" if ns else "face3d_node"
    try:
        assert spin_until(ros.executor, lambda: len([m for m in recorder.messages
                                                     if any(s.name.startswith(name) for s in m.status)]) >= 2, 5.0)
        return diagnostics_values(recorder, name)
    finally:
        recorder.close()


def problem_lines(log: str) -> list[str]:
    return [line for line in log.splitlines()
            if "image skipped" in line or "invalid CameraInfo" in line or "decoded with warnings" in line]


# ---------------------------------------------------------------------------------------------- fuzzing
def fuzz(ros, node: NodeProcess, stream: Stream, topics: tuple[str, ...], ns: str) -> None:
    kinds = sorted(k for k, (_, topic, _, _) in BAD_INPUTS.items() if topic in topics)
    start_problems = len(problem_lines(node.log()))
    t0 = ros.node.get_clock().now().nanoseconds

    @FUZZ
    @given(st.data())
    def example(data):
        draw = HypothesisDraw(data)
        for kind in data.draw(st.lists(st.sampled_from(kinds), max_size=3)):
            stream.send_bad(kind, draw)
        variant, result = stream.send_good(draw)
        assert result is not None, f"no result for a good {variant} frame (tried: {stream.tried})"
        assert len(result.faces) == 1, f"{len(result.faces)} faces for a good {variant} frame"
        z = result.faces[0].pose.pose.position.z
        assert 0.2 < z < 3.0, f"implausible face distance {z} m for a good {variant} frame"

    for i, kind in enumerate(kinds):   # every kind at least once, whatever hypothesis draws
        stream.send_bad(kind, RandomDraw(random.Random(i)))
        assert stream.send_good()[1] is not None, f"no result for the good frame after {kind}"
    example()
    elapsed_s = (ros.node.get_clock().now().nanoseconds - t0) / 1e9
    assert node.alive(), node.log()
    print(f"\n[fuzz {ns}] {sum(stream.tried.values())} bad inputs {dict(sorted(stream.tried.items()))}; good frames "
          f"{sum(stream.good_sent.values())} {dict(sorted(stream.good_sent.items()))}; lost {len(stream.good_lost)};"
          f" {elapsed_s:.1f} s")
    assert stream.good_lost == [], stream.good_lost[:10]
    assert set(stream.tried) == set(kinds), f"kinds never tried: {set(kinds) - set(stream.tried)}"
    log = node.log()
    assert "Traceback" not in log and "unexpected" not in log, log[-3000:]
    # every kind of problem: counted on /diagnostics and logged with its reason
    diag = fresh_diagnostics(ros, ns)
    for kind in kinds:
        _, _, problem_kinds, reason = BAD_INPUTS[kind]
        counts = {p: int(diag.get(f"problems.{p}", 0)) for p in problem_kinds}
        assert sum(counts.values()) > 0, f"{kind}: no problems.{problem_kinds} on /diagnostics: {diag}"
        assert re.search(reason, log), f"{kind}: no log line matching {reason!r}"
    # rate-limited: at most one line per kind of problem per THROTTLE_S (+ the first)
    kinds_seen = sum(1 for key in diag if key.startswith("problems."))
    lines = len(problem_lines(log)) - start_problems
    bound = kinds_seen * (2 + math.ceil(elapsed_s / THROTTLE_S))
    assert lines <= bound, f"{lines} problem log lines in {elapsed_s:.0f} s for {kinds_seen} kinds"


def test_fuzz_raw_images_and_camera_info(ros, rob, raw_stream):
    fuzz(ros, rob, raw_stream, ("image", "camera_info"), "/rob")


def test_fuzz_compressed_images_and_camera_info(ros, robc, compressed_stream):
    fuzz(ros, robc, compressed_stream, ("compressed", "camera_info"), "/robc")


# ---------------------------------------------------------------------------------------------- faults
def test_camera_stops_and_comes_back(ros, rob, raw_stream):
    for _ in range(3):
        raw_stream.send_good()
    status = Recorder(ros.node, DiagnosticArray, "/diagnostics", RELIABLE)

    def silent_reported():
        values = diagnostics_values(status, "rob/face3d_node")
        return values is not None and values["_level"] == DiagnosticStatus.WARN and "no images" in values["_message"]
    assert spin_until(ros.executor, silent_reported, 6.0), "no diagnostics warning while the camera was silent"
    raw_stream.clock_ns += 3_000_000_000      # the stamps jump forward by the pause
    results = [raw_stream.send_frame()[1] for _ in range(5)]
    after_reset(results, "the pause")
    status.items.clear()
    ok = spin_until(ros.executor, lambda: (diagnostics_values(status, "rob/face3d_node") or {}).get("_level")
                    == DiagnosticStatus.OK, 3.0)
    status.close()
    assert ok, diagnostics_values(status, "rob/face3d_node")
    assert rob.alive() and raw_stream.good_lost == []


def test_resolution_and_camera_info_change_mid_stream(ros, rob, raw_stream, good):
    """Every image of the new size is processed with its own CameraInfo (none skipped, none processed with
    the old one), tracking restarts (the old tracks' pixels mean nothing in the new size: they would coast
    beside the faces found anew), and the same scene at another resolution gives the same metric distance."""
    big = load_bgr(ASTRONAUT, 288)
    letterbox = np.full((GOOD_SIDE, 256, 3), 90, np.uint8)
    letterbox[:, 32:224] = good
    distances = {}
    for name, image in (("192", good), ("288", big), ("256x192", letterbox), ("192 again", good)):
        results = [raw_stream.send_frame(bgr=image)[1] for _ in range(4)]
        after_reset(results, f"the change to {name}")
        distances[name] = results[-1].faces[0].pose.pose.position.z
        h, w = image.shape[:2]
        roi = results[-1].faces[0].bbox
        assert roi.x_offset + roi.width <= w and roi.y_offset + roi.height <= h
    # same field of view (f = image width) and scene -> same distance (the 256x192 frame has f = 256 for
    # the same face pixels as f = 192: 4/3 farther)
    assert distances["288"] == pytest.approx(distances["192"], rel=0.15), distances
    assert distances["256x192"] == pytest.approx(distances["192"] * 256 / 192, rel=0.15), distances
    assert "tracking restarts" in rob.log()


def test_stamps_jump_backwards_like_a_looping_bag(ros, rob, raw_stream):
    """A bag played twice: the same stamps again. Every image of both loops is processed and gives its face
    (from the min_hits-th image of a loop on); tracking restarts at the loop (a new track id); the node says
    so."""
    first = raw_stream.clock_ns + 33_000_000
    stamps = [first + i * 33_000_000 for i in range(6)]
    loops = []
    for _ in range(2):
        loops.append([raw_stream.send_frame(header=header_at(s))[1] for s in stamps])
    raw_stream.clock_ns = stamps[-1]
    after = raw_stream.send_good()[1]
    after_reset(loops[1], "the loop")
    assert all(r is not None and len(r.faces) == 1 for r in loops[0])
    ids = [[r.faces[0].id for r in loop if r.faces] for loop in loops]
    assert len(set(ids[0])) == 1 and len(set(ids[1])) == 1, f"the id changed within a loop: {ids}"
    assert ids[0][0] != ids[1][0], "tracking did not restart when the stamps went back"
    assert after is not None and after.faces[0].id == ids[1][0]
    assert "went backwards" in rob.log() and rob.alive()


def _lifecycle(ros, ns: str):
    change = ros.node.create_client(ChangeState, f"{ns}/face3d_node/change_state")
    get = ros.node.create_client(GetState, f"{ns}/face3d_node/get_state")
    assert spin_until(ros.executor, lambda: change.service_is_ready() and get.service_is_ready(), START_TIMEOUT_S)

    def call(client, request):
        future = client.call_async(request)
        assert spin_until(ros.executor, future.done, 60.0), "no answer from the lifecycle service"
        return future.result()

    def transition(tid):
        return call(change, ChangeState.Request(transition=Transition(id=tid))).success

    def state():
        return call(get, GetState.Request()).current_state.id
    return transition, state


def _publishers_of(ros, ns: str) -> set[str]:
    return {topic for topic, _ in ros.node.get_publisher_names_and_types_by_node("face3d_node", ns)}


NODE_OUTPUTS = {"/models/faces", "/models/markers", "/models/debug_image", "/models/mesh_topology", "/tf",
                "/diagnostics"}


def test_missing_or_corrupt_model_file_fails_configure_cleanly(ros, nodes):
    node = nodes["models"]
    folder = node.models_dir
    transition, state = _lifecycle(ros, "/models")
    assert state() == State.PRIMARY_STATE_UNCONFIGURED
    landmark, detector, obj = (folder / "face_landmark.onnx", folder / "face_detection_full_range.onnx",
                               folder / "canonical_face_model.obj")
    saved = {p: p.read_bytes() for p in (landmark, detector, obj)}

    landmark.unlink()                               # missing
    assert not transition(Transition.TRANSITION_CONFIGURE)
    assert state() == State.PRIMARY_STATE_UNCONFIGURED
    assert "face_landmark.onnx is missing" in node.log()
    assert not _publishers_of(ros, "/models") & NODE_OUTPUTS, "a failed configure left publishers behind"

    landmark.write_bytes(saved[landmark])
    detector.write_bytes(saved[detector][:len(saved[detector]) // 2])   # truncated
    obj.write_bytes(saved[obj][:100])                                   # and a corrupt geometry file
    assert not transition(Transition.TRANSITION_CONFIGURE)
    assert state() == State.PRIMARY_STATE_UNCONFIGURED
    line = next(ln for ln in node.log().splitlines() if "face_detection_full_range.onnx (" in ln)
    assert "ERROR" in line and "configure failed" in line and "does not match its sha256" in line
    assert "canonical_face_model.obj (100 bytes)" in line, "every bad file is named in the one message"
    assert not _publishers_of(ros, "/models") & NODE_OUTPUTS

    for path, data in saved.items():
        path.write_bytes(data)
    for _ in range(2):   # configure now works, and cleanup leaves nothing behind, twice
        assert transition(Transition.TRANSITION_CONFIGURE), node.log()[-2000:]
        assert state() == State.PRIMARY_STATE_INACTIVE
        assert NODE_OUTPUTS - {"/tf"} <= _publishers_of(ros, "/models")
        assert transition(Transition.TRANSITION_CLEANUP)
        assert spin_until(ros.executor, lambda: not _publishers_of(ros, "/models") & NODE_OUTPUTS, 5.0), \
            f"publishers left after cleanup: {_publishers_of(ros, '/models') & NODE_OUTPUTS}"
    assert node.alive() and "Traceback" not in node.log()


@pytest.mark.skipif(CUDA, reason="CUDA runs here: nothing to fall back from")
def test_cuda_requested_without_cuda_falls_back_with_a_warning(ros, nodes):
    node = nodes["models"]
    if "configured: backend" not in node.log():
        transition, _ = _lifecycle(ros, "/models")
        assert transition(Transition.TRANSITION_CONFIGURE), node.log()[-2000:]
    line = next(ln for ln in node.log().splitlines() if "backend 'cuda' requested" in ln)
    assert "WARN" in line and "falling back to cpu" in line and "backend.strict" in line
    assert "configured: backend cpu" in node.log()


@pytest.mark.skipif(TENSORRT, reason="TensorRT runs here")
def test_tensorrt_requested_with_strict_fails_clearly(nodes):
    node = nodes["strict"]
    assert node.wait(START_TIMEOUT_S) == 1, node.log()
    log = node.log()
    assert "TensorrtExecutionProvider" in log and "backend.strict forbids falling back" in log
    assert "configure failed" in log and "Traceback" not in log


# ---------------------------------------------------------------------------------------------- parameters
def bad_values(spec: params.ParamSpec) -> list:
    """For one parameter: a value of the wrong type, and (where they apply) below and above its range, an
    unknown choice, NaN."""
    wrong_type = {bool: "yes", int: "ten", float: "half", str: 1}[spec.type]
    values = [wrong_type]
    if spec.type is int:
        values.append(1.5)
    if spec.lo is not None:
        values.append(spec.type(spec.lo - (1 if spec.type is int else 0.5)))
    if spec.hi is not None:
        values.append(spec.type(spec.hi + (1 if spec.type is int else 0.5)))
    if spec.choices:
        values.append("no_such_" + spec.choices[0])
    if spec.type is float:
        values.append(float("nan"))
    return values


CASES = [(name, value) for name, spec in params.all_params().items() for value in bad_values(spec)]


def test_every_bad_value_is_rejected_with_the_reason_by_the_validation():
    """What on_configure checks (start-up values; read-only parameters can change at no other time)."""
    for name, value in CASES:
        result = params.check_parameters([(name, value)], configured=False)
        assert not result.successful, f"{name} := {value!r} accepted"
        assert name in result.reason, f"{name} := {value!r}: the reason does not name it: {result.reason}"
        spec = params.SPECS[name]
        if isinstance(value, float) and math.isnan(value):
            assert "NaN" in result.reason
        elif spec.choices and isinstance(value, str):
            assert "must be one of" in result.reason
        elif type(value) is not spec.type:
            assert re.search(r"must be (a |an |true or false)", result.reason), result.reason
        else:
            assert "must be in [" in result.reason


def test_every_bad_value_is_rejected_at_run_time(ros, rob):
    client = ros.node.create_client(SetParameters, "/rob/face3d_node/set_parameters")
    getter = ros.node.create_client(GetParameters, "/rob/face3d_node/get_parameters")
    assert client.wait_for_service(timeout_sec=10.0) and getter.wait_for_service(timeout_sec=10.0)
    names = list(params.SPECS)

    def values():
        future = getter.call_async(GetParameters.Request(names=names))
        assert spin_until(ros.executor, future.done, 5.0)
        return [parameter_value_to_python(v) for v in future.result().values]
    before = values()
    accepted, silent = [], []
    for name, value in CASES:
        future = client.call_async(SetParameters.Request(parameters=[Parameter(name, value=value).to_parameter_msg()]))
        assert spin_until(ros.executor, future.done, 5.0)
        result = future.result().results[0]
        if result.successful:
            accepted.append((name, value))
        elif not result.reason:
            silent.append((name, value))
        elif params.SPECS[name].dynamic and not re.search(r"must be|type|range|NaN", result.reason):
            silent.append((name, value, result.reason))
    after = values()
    ros.node.destroy_client(client)
    ros.node.destroy_client(getter)
    print(f"\n[run-time parameters] {len(CASES)} bad values over {len(names)} parameters: "
          f"{len(CASES) - len(accepted)} rejected")
    assert accepted == [], f"accepted: {accepted}"
    assert silent == [], f"rejected without a reason naming the problem: {silent}"
    assert [str(v) for v in after] == [str(v) for v in before], "a rejected value changed a parameter"
    assert rob.alive()


def test_bad_values_at_startup_fail_with_every_reason(nodes):
    node = nodes["badstart"]
    assert node.wait(START_TIMEOUT_S) == 1, node.log()
    log = node.log()
    line = next(ln for ln in log.splitlines() if "invalid parameters" in ln)
    for name, (_, reason) in STARTUP_BAD.items():
        assert reason in line, f"{name}: {reason!r} not in {line!r}"
    assert "Traceback" not in log


# ---------------------------------------------------------------------------------------------- in-process units
def test_problem_log_limits_each_kind_on_its_own():
    from face3d_ros.ros.node import ProblemLog

    class Logger:
        lines: list = []

        def error(self, text):
            self.lines.append(("E", text))

        def warning(self, text):
            self.lines.append(("W", text))

        def info(self, text):
            self.lines.append(("I", text))
    logger = Logger()
    log = ProblemLog(logger, period_s=0.2)
    for _ in range(50):
        log("warning", "image:step", "step")
        log("error", "camera_info:uncalibrated", "zero K")
    assert [t for _, t in logger.lines] == ["step", "zero K"], "one kind hid another, or a kind repeated"
    import time
    time.sleep(0.25)
    log("warning", "image:step", "step")
    assert logger.lines[-1] == ("W", "step [49 more like this in the last 0 s]")
    assert log.counts == {"image:step": 51, "camera_info:uncalibrated": 50}


def test_compressed_images_are_checked_before_and_after_decoding(good):
    import cv2
    from sensor_msgs.msg import CompressedImage

    from face3d_ros.ros import conversions
    from ros_helpers import png_declaring

    def decode(data, fmt="jpeg"):
        return conversions.decode_compressed(CompressedImage(format=fmt, data=data))
    with pytest.raises(conversions.ImageFormatError, match="30000x30000 pixels, more than") as err:
        decode(png_declaring(30000, 30000), "png")   # refused from its header: never allocated
    assert err.value.kind == "too_large"
    jpg = cv2.imencode(".jpg", good)[1].tobytes()
    image, warnings = decode(jpg[:-2] + b"abcd" * 4 + jpg[-2:])   # junk before EOI, as some webcams send
    assert image.shape == good.shape and warnings and "9 extraneous bytes before marker 0xd9" in warnings[0]
    broken = bytearray(jpg)
    for i in range(len(jpg) // 2, len(jpg) // 2 + 40):
        broken[i] ^= 0x55
    with pytest.raises(conversions.ImageFormatError) as err:    # wrong pixels: skipped, with libjpeg's words
        decode(bytes(broken))
    assert err.value.kind in ("corrupt", "decode") and "JPEG" in str(err.value)


@pytest.mark.parametrize("fields, kind, reason", [
    (dict(k=[192.0, 0, 96, 0, 192.0, 96, 0, 0, 0]), "camera_matrix", "not a camera matrix"),
    (dict(k=[192.0, 0, 96, 0.5, 192.0, 96, 0, 0, 1]), "camera_matrix", "not a camera matrix"),
    (dict(k=[1e-300, 0, 96, 0, 1e-300, 96, 0, 0, 1]), "focal_length", "focal length fx"),
    (dict(k=[1e300, 0, 96, 0, 1e300, 96, 0, 0, 1]), "focal_length", "focal length fx"),
    (dict(binning_x=2**31), "size", "leaves no pixel"),
    (dict(width=2**32 - 1), "size", "more than 32768"),
    (dict(d=[float("nan")] * 5), "non_finite", "NaN or inf"),
    (dict(d=[0.1] * 3), "distortion", "coefficients, got 3"),
])
def test_camera_info_that_is_no_camera_is_refused_with_its_kind(fields, kind, reason):
    from sensor_msgs.msg import CameraInfo

    from face3d_ros.ros import conversions
    info = CameraInfo(width=192, height=192, distortion_model="plumb_bob", d=[0.0] * 5,
                      k=[192.0, 0, 96, 0, 192.0, 96, 0, 0, 1])
    for name, value in fields.items():
        setattr(info, name, value)
    with pytest.raises(conversions.CameraInfoError, match=reason) as err:
        conversions.camera_info_to_model(info)
    assert err.value.kind == kind
