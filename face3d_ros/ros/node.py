"""The face3d lifecycle node: a thin adapter, image -> FacePipeline -> messages.

Topics (relative names: remap them):
  in   image (sensor_msgs/Image) or image/compressed (parameter image_transport), camera_info
  out  faces (face3d_ros/FacePoseArray, one per processed image, also when empty), markers
       (visualization_msgs/MarkerArray), debug_image (sensor_msgs/Image, drawn only while subscribed),
       mesh_topology (face3d_ros/FaceMeshTopology, transient local), /tf (face_<id>, gaze_<id>),
       /diagnostics (diagnostic_msgs/DiagnosticArray, 1 Hz)

Lifecycle: parameters are declared in __init__; on_configure validates them and builds the pipeline
(FAILURE with the reason in the log when a value or a model file is bad: nothing half-built stays);
on_activate subscribes; on_deactivate unsubscribes; on_cleanup releases the pipeline.
Images are processed in the subscription callback, newest only (KEEP_LAST 1): no timer, no queue.

Robustness: no callback lets an exception out (a bad message, a bug: the node logs it and goes on). Each
kind of problem (an image's wrong encoding, step or size, a corrupt JPEG, an invalid CameraInfo, stamps going
backwards, ...) is logged at most once per THROTTLE_S seconds, with its reason and how many more were seen
meanwhile; /diagnostics counts them per kind (`problems.<kind>`), with the live track count, the marker ids
awaiting a DELETE and the node's publishers.
"""
from __future__ import annotations

import functools
import logging
import math
import statistics
import time
import traceback
from collections import Counter, OrderedDict, deque

import numpy as np
from diagnostic_msgs.msg import DiagnosticArray, DiagnosticStatus, KeyValue
from rcl_interfaces.msg import SetParametersResult
from rclpy.event_handler import SubscriptionEventCallbacks
from rclpy.lifecycle import LifecycleNode, LifecyclePublisher, LifecycleState, TransitionCallbackReturn
from rclpy.qos import (DurabilityPolicy, HistoryPolicy, QoSProfile, ReliabilityPolicy, qos_policy_name_from_kind,
                       qos_profile_sensor_data)
from sensor_msgs.msg import CameraInfo, CompressedImage, Image
from std_msgs.msg import Header
from visualization_msgs.msg import MarkerArray

from face3d_ros.msg import FaceMeshTopology, FacePoseArray

from ..core.types import CameraModel, InputError
from . import conversions, messages, params

try:  # a ROS install: the real broadcaster
    from tf2_ros import TransformBroadcaster
except ImportError:  # the pip route: publish tf2_msgs/TFMessage on /tf ourselves
    TransformBroadcaster = None
try:
    from tf2_msgs.msg import TFMessage
except ImportError:
    TFMessage = None

THROTTLE_S = 5.0                # rate-limited log lines: at most one per this many seconds per kind of problem
GAP_FACTOR = 1.8                # an image gap longer than this times the median period means images went missing
GAP_WINDOW = 30                 # images over which the median period is taken
PAUSE_S, PAUSE_PERIODS = 1.0, 10  # a gap longer than both is a paused stream, not lost images
LATENCY_WARN_S = 0.1            # diagnostics: mean processing latency above this is a warning
LARGE_IMAGE_ADVICE = ("Full-size raw images over best-effort DDS are lost unless the camera's side uses a larger "
                      "shared-memory segment (config/fastdds_large_images.xml) or compressed images "
                      '(image_transport:=compressed); see the README section "Large images over DDS"')
TF_QOS = QoSProfile(depth=100, reliability=ReliabilityPolicy.RELIABLE, durability=DurabilityPolicy.VOLATILE)
LATCHED_QOS = QoSProfile(depth=1, reliability=ReliabilityPolicy.RELIABLE,
                         durability=DurabilityPolicy.TRANSIENT_LOCAL)


class RosLogHandler(logging.Handler):
    """Forwards the core's Python logging ("face3d_ros" logger) to the node's ROS logger."""

    def __init__(self, ros_logger):
        super().__init__()
        self.ros_logger = ros_logger

    def emit(self, record: logging.LogRecord) -> None:
        try:
            text = self.format(record)
            if record.levelno >= logging.ERROR:
                self.ros_logger.error(text)
            elif record.levelno >= logging.WARNING:
                self.ros_logger.warning(text)
            elif record.levelno >= logging.INFO:
                self.ros_logger.info(text)
            else:
                self.ros_logger.debug(text)
        except Exception:  # a log line must never break the node
            pass


class ProblemLog:
    """Rate-limited log lines per KIND of problem: the first of a kind is logged at once, the next ones at
    most once per `period_s` (with the number seen meanwhile). rclpy's throttle_duration_sec throttles per
    call site, so one kind of bad input would hide another; this does not. Counts every problem by kind."""

    MAX_KINDS = 256   # kinds are a fixed set plus exception type names; bounded all the same

    def __init__(self, logger, period_s: float = THROTTLE_S) -> None:
        self._logger = logger
        self._period_s = period_s
        self._last: OrderedDict[str, list] = OrderedDict()   # kind -> [monotonic time logged, suppressed]
        self.counts: Counter[str] = Counter()

    def __call__(self, level: str, kind: str, text: str) -> bool:
        """Log `text` at `level` ("info", "warning", "error") unless `kind` was logged < period_s ago."""
        now = time.monotonic()
        if len(self.counts) < self.MAX_KINDS or kind in self.counts:
            self.counts[kind] += 1
        entry = self._last.get(kind)
        if entry is not None and now - entry[0] < self._period_s:
            entry[1] += 1
            return False
        if entry is not None and entry[1]:
            text += f" [{entry[1]} more like this in the last {now - entry[0]:.0f} s]"
        self._last[kind] = [now, 0]
        self._last.move_to_end(kind)
        while len(self._last) > self.MAX_KINDS:
            self._last.popitem(last=False)
        try:   # one call site per severity: rclpy refuses a call site whose severity changes
            if level == "error":
                self._logger.error(text)
            elif level == "warning":
                self._logger.warning(text)
            else:
                self._logger.info(text)
        except Exception:   # a log line must never break the node
            pass
        return True


def _guarded(kind: str):
    """Decorator for callbacks: an exception is logged (rate-limited, with where it came from), never raised
    into the executor, which would end the node."""
    def wrap(method):
        @functools.wraps(method)
        def guarded(self, *args, **kwargs):
            try:
                return method(self, *args, **kwargs)
            except Exception as err:
                self._problem("error", f"unexpected:{kind}:{type(err).__name__}",
                              f"{kind} failed: {_describe(err)}")
                return None
        return guarded
    return wrap


def _describe(err: BaseException) -> str:
    """`Type: message (at file:line in function)`: enough to find a bug from one log line."""
    frames = traceback.extract_tb(err.__traceback__)
    where = f" (at {frames[-1].filename.rsplit('/', 1)[-1]}:{frames[-1].lineno} in {frames[-1].name})" if frames else ""
    return f"{type(err).__name__}: {err}{where}"


class Stats:
    """Counters and timings reported on /diagnostics (totals since activation, and per report window)."""

    def __init__(self) -> None:
        self.received = self.processed = self.skipped = self.missing = self.lost_dds = 0
        self.window_processed = 0
        self.window_latency_s: list[float] = []
        self.window_start = time.monotonic()
        self.last_faces = 0
        self.last_image_time: float | None = None

    def start_window(self) -> None:
        self.window_processed = 0
        self.window_latency_s = []
        self.window_start = time.monotonic()


class Face3dNode(LifecycleNode):
    """Faces, metric head poses and meshes from a camera stream; see the module docstring."""

    def __init__(self, node_name: str = "face3d_node", **kwargs) -> None:
        super().__init__(node_name, **kwargs)
        # Start-up values rclpy rejected (type, range), by name: on_configure fails with them.
        self._startup_problems: dict[str, str] = params.declare(self)
        self._problem = ProblemLog(self.get_logger())
        self._log_handler = RosLogHandler(self.get_logger())
        logging.getLogger("face3d_ros").addHandler(self._log_handler)
        logging.getLogger("face3d_ros").setLevel(logging.INFO)
        self._clear()
        self.add_on_set_parameters_callback(self._on_set_parameters)

    # ------------------------------------------------------------------------------------------ state
    def _clear(self) -> None:
        """Forget everything on_configure built (the state of an unconfigured node)."""
        self._pipeline = None
        self._settings: dict = {}
        self._triangles = None
        self._topology: FaceMeshTopology | None = None
        # NOT `_publishers`: that is rclpy.Node's own list of every publisher of the node (overwriting it lost
        # track of /parameter_events, and destroying while iterating over it leaked publishers at cleanup)
        self._own_publishers: list = []
        self._faces_pub = self._markers_pub = self._debug_pub = self._mesh_pub = None
        self._diag_pub = self._tf_pub = self._tf_broadcaster = None
        self._image_sub = self._info_sub = None
        self._diag_timer = None
        self._reset_stream()

    def _reset_stream(self) -> None:
        """Forget the camera stream (on activation: a new stream may start)."""
        self._camera: CameraModel | None = None
        self._camera_error: str | None = None
        self._fallback_camera: CameraModel | None = None
        self._last_stamp_ns: int | None = None
        self._stamp_repeated = False    # the last image had the stamp of the one before it
        self._image_size: tuple[int, int] | None = None
        self._stamps: deque[int] = deque(maxlen=GAP_WINDOW + 1)
        self._callback_s: deque[float] = deque(maxlen=GAP_WINDOW)
        self._marker_ids: set[str] = set()
        self._qos_mismatch_reported: frozenset = frozenset()
        self._stats = Stats()

    def _release(self) -> None:
        """Destroy what on_activate and on_configure created; safe to call in any state."""
        self._unsubscribe()
        for pub in list(self._own_publishers):   # a copy: destroying one removes it from rclpy's own list
            try:
                if isinstance(pub, LifecyclePublisher):
                    self.destroy_lifecycle_publisher(pub)
                else:
                    self.destroy_publisher(pub)
            except Exception as err:  # keep releasing the rest
                self.get_logger().warning(f"could not destroy a publisher: {err}")
        self._clear()

    def _unsubscribe(self) -> None:
        for sub in (self._image_sub, self._info_sub):
            if sub is not None:
                self.destroy_subscription(sub)
        if self._diag_timer is not None:
            self.destroy_timer(self._diag_timer)
        self._image_sub = self._info_sub = self._diag_timer = None

    # ------------------------------------------------------------------------------------------ parameters
    def _current_values(self) -> dict:
        return {name: self.get_parameter(name).value for name in params.SPECS}

    def _on_set_parameters(self, parameters) -> SetParametersResult:
        """Validate run-time changes (ros2 param set) and apply them: pipeline ones via update_config()."""
        try:
            return self._set_parameters(parameters)
        except Exception as err:   # never into rclpy: the change is refused with the reason
            self.get_logger().error(f"parameter change failed: {_describe(err)}")
            return SetParametersResult(successful=False, reason=f"internal error: {type(err).__name__}: {err}")

    def _set_parameters(self, parameters) -> SetParametersResult:
        values = {p.name: p.value for p in parameters}
        result = params.check_parameters(values.items(), configured=self._pipeline is not None)
        if not result.successful:
            self.get_logger().warning(f"parameter change rejected: {result.reason}")
            return result
        if self._pipeline is not None:
            updates = params.pipeline_updates(values)
            if updates:
                try:
                    self._pipeline.update_config(updates)
                except (ValueError, KeyError) as err:
                    return SetParametersResult(successful=False, reason=str(err))
            for name, value in values.items():
                if name in params.SPECS and not params.SPECS[name].pipeline:
                    self._settings[name] = params.coerce(params.SPECS[name], value)
            if "fallback_hfov_deg" in values:
                self._fallback_camera = None
        for name in values:
            self._startup_problems.pop(name, None)
        return SetParametersResult(successful=True)

    # ------------------------------------------------------------------------------------------ lifecycle
    def on_configure(self, state: LifecycleState) -> TransitionCallbackReturn:
        log = self.get_logger()
        try:
            values = self._current_values()
            problems = list(self._startup_problems.values())
            result = params.check_parameters(values.items(), configured=False)
            if not result.successful:
                problems.append(result.reason)
            if problems:
                log.error("configure failed: invalid parameters: " + "; ".join(problems))
                return TransitionCallbackReturn.FAILURE
            config = params.pipeline_config(values)
            from ..core import geometry
            from ..core.pipeline import FacePipeline   # onnxruntime: imported when needed
            pipeline = FacePipeline(config)   # checks every model file it needs first (ModelFilesError)
            canonical = geometry.load_canonical_face(config.backend.models_dir)
            if config.landmarks.refine_iris:
                triangles = np.vstack([canonical.triangles, canonical.iris_triangles])
                vertex_count = geometry.MESH_WITH_IRIS_POINTS
            else:
                triangles, vertex_count = canonical.triangles, geometry.MESH_POINTS
            topology = messages.mesh_topology(triangles, vertex_count)
        except Exception as err:  # bad parameter combination, missing/corrupt model files, backend
            log.error(f"configure failed: {type(err).__name__}: {err}")
            self._release()
            return TransitionCallbackReturn.FAILURE
        try:
            self._pipeline = pipeline
            self._triangles = triangles
            self._topology = topology
            self._settings = {s.name: values[s.name] for s in params.NODE_PARAMS}
            self._create_publishers()
        except Exception as err:
            log.error(f"configure failed while creating publishers: {type(err).__name__}: {err}")
            self._release()
            return TransitionCallbackReturn.FAILURE
        log.info(f"configured: backend {pipeline.backend}, detector {config.detector.detector_range}, "
                 f"input {self._image_topic()} ({self._settings['reliability']})")
        return TransitionCallbackReturn.SUCCESS

    def _create_publishers(self) -> None:
        pub = self.create_lifecycle_publisher
        self._faces_pub = pub(FacePoseArray, "faces", QoSProfile(depth=10, reliability=ReliabilityPolicy.RELIABLE))
        self._markers_pub = pub(MarkerArray, "markers", 10)
        self._debug_pub = pub(Image, "debug_image", qos_profile_sensor_data)
        self._mesh_pub = pub(FaceMeshTopology, "mesh_topology", LATCHED_QOS)
        self._diag_pub = pub(DiagnosticArray, "/diagnostics", 10)
        self._own_publishers = [self._faces_pub, self._markers_pub, self._debug_pub, self._mesh_pub, self._diag_pub]
        if TransformBroadcaster is not None:
            self._tf_broadcaster = TransformBroadcaster(self)
            self._own_publishers.append(self._tf_broadcaster.pub_tf)
        elif TFMessage is not None:
            self._tf_pub = pub(TFMessage, "/tf", TF_QOS)
            self._own_publishers.append(self._tf_pub)
        else:
            self.get_logger().warning("neither tf2_ros nor tf2_msgs is installed: no TF frames are published")

    def on_activate(self, state: LifecycleState) -> TransitionCallbackReturn:
        result = super().on_activate(state)   # enables the lifecycle publishers
        if result != TransitionCallbackReturn.SUCCESS:
            return result
        try:
            self._reset_stream()
            self._pipeline.reset()
            self._mesh_pub.publish(self._topology)
            reliability = (ReliabilityPolicy.RELIABLE if self._settings["reliability"] == "reliable"
                           else ReliabilityPolicy.BEST_EFFORT)
            qos = QoSProfile(history=HistoryPolicy.KEEP_LAST, depth=1, reliability=reliability,
                             durability=DurabilityPolicy.VOLATILE)
            events = SubscriptionEventCallbacks(incompatible_qos=self._on_incompatible_qos,
                                                message_lost=self._on_message_lost)
            # camera_info FIRST: when an image and its CameraInfo are both waiting, the executor runs the
            # callbacks in creation order, so the image is processed with its own CameraInfo (a resolution
            # or calibration change takes effect at the image that brings it, no image is skipped)
            self._info_sub = self.create_subscription(
                CameraInfo, "camera_info", self._on_camera_info, qos,
                event_callbacks=SubscriptionEventCallbacks(incompatible_qos=self._on_incompatible_qos))
            if self._settings["image_transport"] == "compressed":
                self._image_sub = self.create_subscription(CompressedImage, self._image_topic(), self._on_compressed,
                                                           qos, event_callbacks=events)
            else:
                self._image_sub = self.create_subscription(Image, self._image_topic(), self._on_image, qos,
                                                           event_callbacks=events)
            self._diag_timer = self.create_timer(1.0, self._on_diagnostics_timer)
        except Exception as err:
            self.get_logger().error(f"activate failed: {type(err).__name__}: {err}")
            self._unsubscribe()
            super().on_deactivate(state)
            return TransitionCallbackReturn.FAILURE
        self.get_logger().info(f"active: subscribed to {self._image_sub.topic_name} and {self._info_sub.topic_name}")
        self._check_qos()
        return TransitionCallbackReturn.SUCCESS

    def on_deactivate(self, state: LifecycleState) -> TransitionCallbackReturn:
        self._unsubscribe()
        self.get_logger().info("inactive: unsubscribed")
        return super().on_deactivate(state)

    def on_cleanup(self, state: LifecycleState) -> TransitionCallbackReturn:
        self._release()
        self.get_logger().info("cleaned up: pipeline released")
        return TransitionCallbackReturn.SUCCESS

    def on_shutdown(self, state: LifecycleState) -> TransitionCallbackReturn:
        self._release()
        return TransitionCallbackReturn.SUCCESS

    def on_error(self, state: LifecycleState) -> TransitionCallbackReturn:
        self.get_logger().error("error during a transition: releasing everything (back to unconfigured)")
        self._release()
        return TransitionCallbackReturn.SUCCESS

    def destroy_node(self) -> None:
        logging.getLogger("face3d_ros").removeHandler(self._log_handler)
        super().destroy_node()

    def _image_topic(self) -> str:
        """`image`, or `<resolved image>/compressed` as image_transport names it (a remap of `image` applies)."""
        if self._settings.get("image_transport") == "compressed":
            return self.resolve_topic_name("image") + "/compressed"
        return "image"

    # ------------------------------------------------------------------------------------------ inputs
    @_guarded("camera_info callback")
    def _on_camera_info(self, msg: CameraInfo) -> None:
        """The newest CameraInfo rules: an invalid one stops processing until a valid one arrives (a camera
        that says it is uncalibrated is not silently used with its previous calibration)."""
        try:
            camera = conversions.camera_info_to_model(msg)
        except (InputError, ValueError) as err:
            reason = f"invalid CameraInfo on {self._info_sub.topic_name}: {err}"
            self._problem("error", f"camera_info:{getattr(err, 'kind', 'invalid')}",
                          reason + self._without_camera_action())
            self._camera, self._camera_error = None, reason
            return
        if self._camera_error is not None:
            self._problem("info", "camera_info:recovered", "a valid CameraInfo arrived: processing images with it")
        self._camera, self._camera_error = camera, None

    def _without_camera_action(self) -> str:
        hfov = self._settings.get("fallback_hfov_deg", 0.0)
        if hfov > 0:
            return f"; meanwhile assuming an ideal pinhole with {hfov:g} deg horizontal field of view"
        return "; images are skipped until a valid one arrives (or set fallback_hfov_deg)"

    def _camera_for(self, width: int, height: int) -> CameraModel | None:
        """The latest valid CameraInfo's model, else the fallback pinhole, else None (and a warning)."""
        camera = self._camera
        if camera is not None:
            if not camera.fits(width, height):
                self._problem("warning", "camera_info:size_mismatch",
                              f"image skipped: CameraInfo is for {camera.width}x{camera.height} images but the "
                              f"image is {width}x{height}: skipping images until they match")
                return None
            return camera
        hfov = self._settings["fallback_hfov_deg"]
        if hfov > 0:
            fallback = self._fallback_camera
            if fallback is None or (fallback.width, fallback.height) != (width, height):
                fallback = self._fallback_camera = CameraModel.from_fov(width, height, hfov)
                self.get_logger().info(f"no valid CameraInfo: assuming an ideal pinhole with {hfov:g} deg horizontal "
                                       f"field of view (fx = fy = {fallback.K[0, 0]:.1f} px) for {width}x{height} "
                                       "images until one arrives")
            return fallback
        if self._camera_error is None:
            self._problem("warning", "camera_info:none_yet",
                          f"no CameraInfo received yet on {self._info_sub.topic_name}: skipping images until one "
                          "arrives (or set fallback_hfov_deg to assume a field of view meanwhile)")
        else:
            self._problem("error", "camera_info:invalid_meanwhile",
                          "image skipped: " + self._camera_error + self._without_camera_action())
        return None

    def _on_image(self, msg: Image) -> None:
        self._handle_image(msg, conversions.image_to_bgr)

    def _on_compressed(self, msg: CompressedImage) -> None:
        self._handle_image(msg, self._decode_compressed)

    def _decode_compressed(self, msg: CompressedImage) -> np.ndarray:
        bgr, warnings = conversions.decode_compressed(msg)
        if warnings:   # the codec complained, but the pixels are right: processed
            self._problem("warning", "image:decode_warning",
                          f"compressed image ({msg.format or 'no format'}, {len(msg.data)} bytes) decoded with "
                          f"warnings, processed all the same: {'; '.join(warnings)}")
        return bgr

    @_guarded("message-lost event")
    def _on_message_lost(self, event) -> None:
        """DDS says images never arrived (best effort: typically large images split in fragments)."""
        self._stats.lost_dds = int(event.total_count)
        topic = self._image_sub.topic_name if self._image_sub is not None else "the image topic"
        self._problem(
            "warning", "dds_lost",
            f"DDS lost {event.total_count} image(s) on {topic} so far. {LARGE_IMAGE_ADVICE}")

    def _handle_image(self, msg, convert) -> None:
        """Never raises: a bad image is skipped with a rate-limited log line."""
        start = time.perf_counter()
        self._stats.received += 1
        self._stats.last_image_time = time.monotonic()
        try:
            self._process(msg, convert, start)
        except Exception as err:
            self._stats.skipped += 1
            self._problem("error", f"unexpected:image:{type(err).__name__}",
                          f"image skipped: unexpected {_describe(err)}")
        finally:
            self._callback_s.append(time.perf_counter() - start)

    def _process(self, msg, convert, start: float) -> None:
        header = msg.header
        stamp_ns = header.stamp.sec * 1_000_000_000 + header.stamp.nanosec
        try:
            image = convert(msg)
        except (InputError, ValueError) as err:   # bad encoding, corrupt JPEG, inconsistent sizes
            self._stats.skipped += 1
            self._problem("warning", f"image:{getattr(err, 'kind', 'invalid')}", f"image skipped: {err}")
            return
        height, width = image.shape[:2]
        camera = self._camera_for(width, height)
        if camera is None:
            self._stats.skipped += 1
            return
        self._follow_size(width, height)
        self._follow_stamps(stamp_ns)
        try:
            faces = self._pipeline.process(image, camera, stamp_ns)
        except InputError as err:   # e.g. smaller than the pipeline's minimum size
            self._stats.skipped += 1
            self._problem("warning", "image:unusable", f"image skipped: {err}")
            return
        if self._settings["publish_tentative"] and self._pipeline.config.tracking.enabled:
            faces = self._pipeline.tracker.published_faces(include_tentative=True,
                                                            max_faces=self._pipeline.config.detector.max_faces)
        self._publish(header, faces, image, camera, start)

    def _follow_size(self, width: int, height: int) -> None:
        """A new image size restarts the tracking: the tracks' boxes and crops are pixels of the old size (kept,
        they would coast beside the same faces found anew, published twice)."""
        size = (width, height)
        if self._image_size is not None and size != self._image_size:
            self._problem("info", "image_size_changed",
                          f"image size changed from {self._image_size[0]}x{self._image_size[1]} to {width}x{height}:"
                          " tracking restarts")
            self._pipeline.reset()
        self._image_size = size

    def _follow_stamps(self, stamp_ns: int) -> None:
        """Stamps going backwards reset the tracking; gaps in the stamps mean images went missing; equal stamps
        (a driver that does not stamp) are reported."""
        last = self._last_stamp_ns
        self._last_stamp_ns = stamp_ns
        if stamp_ns == last:
            self._problem("warning", "stamps_repeated",
                          f"image stamp {stamp_ns / 1e9:.3f} s equals the previous image's: the camera driver does "
                          "not stamp its images; smoothing uses the frame interval instead")
            self._stamp_repeated = True
            return   # no period to measure
        if last is not None and stamp_ns < last:
            self._problem("info", "stamps_backwards",
                          f"image stamps went backwards by {(last - stamp_ns) / 1e9:.3f} s (a new stream or a "
                          "looping bag): tracking restarts")   # the pipeline resets itself on such stamps
            self._stamps.clear()
        self._stamps.append(stamp_ns)
        after_repeats, self._stamp_repeated = self._stamp_repeated, False
        stamps = list(self._stamps)
        periods = [b - a for a, b in zip(stamps, stamps[1:]) if b > a]
        if len(periods) < 4 or stamps[-1] <= stamps[-2] or after_repeats:
            return   # after repeated stamps the last gap spans several images: no sign of missing ones
        median, gap = statistics.median(periods[:-1]), periods[-1]
        if gap <= GAP_FACTOR * median:
            return
        if gap > max(PAUSE_S * 1e9, PAUSE_PERIODS * median):   # the stream paused (or restarted): not losses
            self._stamps.clear()
            self._stamps.append(stamp_ns)
            return
        missing = max(1, round(gap / median) - 1)
        self._stats.missing += missing
        busy_s = statistics.median(self._callback_s) if self._callback_s else 0.0
        if busy_s * 1e9 > 0.8 * median:
            self._problem(
                "info", "images_skipped_busy",
                f"{missing} image(s) skipped: this node needs ~{busy_s * 1e3:.0f} ms per image and images come "
                f"every ~{median / 1e6:.0f} ms, so it processes the newest one only (by design)")
        else:
            self._problem(
                "warning", "images_missing",
                f"{missing} image(s) missing before stamp {stamp_ns / 1e9:.3f} (gap {gap / 1e6:.0f} ms, images "
                f"usually every {median / 1e6:.0f} ms; DDS reported {self._stats.lost_dds} lost so far). "
                f"{LARGE_IMAGE_ADVICE}")

    # ------------------------------------------------------------------------------------------ outputs
    def _publish(self, header, faces, image, camera, start: float) -> None:
        height, width = image.shape[:2]
        prefix = self._settings["frame_prefix"]
        ids = set(messages.face_ids(faces))
        faces_msg = messages.face_pose_array(header, faces, camera, width, height)
        try:
            tf = messages.transforms(header, faces, prefix)
        except ValueError as err:   # e.g. an image without frame_id
            tf = []
            self._problem("warning", "no_tf", f"no TF published: {err}")
        faces_msg.processing_latency = time.perf_counter() - start
        self._faces_pub.publish(faces_msg)
        if tf:
            if self._tf_broadcaster is not None:
                self._tf_broadcaster.sendTransform(tf)
            elif self._tf_pub is not None:
                self._tf_pub.publish(TFMessage(transforms=tf))
        if self._settings["markers.enabled"] and self._markers_pub.get_subscription_count() > 0:
            gone = self._marker_ids - ids
            self._markers_pub.publish(messages.marker_array(header, faces, self._triangles, gone))
            self._marker_ids = ids
        if self._debug_pub.get_subscription_count() > 0:
            from ..core.draw import draw_faces
            canvas = draw_faces(image, faces, camera, self._triangles, rate_hz=self._rate_hz())
            self._debug_pub.publish(conversions.bgr_to_image_msg(canvas, header))
        latency = time.perf_counter() - start
        stats = self._stats
        stats.processed += 1
        stats.window_processed += 1
        stats.window_latency_s.append(latency)
        stats.last_faces = len(faces)

    def _rate_hz(self) -> float | None:
        elapsed = time.monotonic() - self._stats.window_start
        return self._stats.window_processed / elapsed if elapsed > 0.5 else None

    # ------------------------------------------------------------------------------------------ health
    def _check_qos(self) -> bool:
        """Log an error when our inputs have best-effort publishers while we subscribe reliably (they would
        deliver nothing); True when such publishers exist."""
        if self._image_sub is None or self._settings.get("reliability") != "reliable":
            return False
        offenders = frozenset(
            (sub.topic_name, f"{info.node_namespace.rstrip('/')}/{info.node_name}")
            for sub in (self._image_sub, self._info_sub)
            for info in self.get_publishers_info_by_topic(sub.topic_name)
            if info.qos_profile.reliability == ReliabilityPolicy.BEST_EFFORT)
        if offenders and offenders != self._qos_mismatch_reported:
            who = ", ".join(f"{node} on {topic}" for topic, node in sorted(offenders))
            self.get_logger().error(
                f"QoS mismatch: best effort publishers ({who}) while this node subscribes reliably "
                "(reliability:=reliable), so it receives nothing from them. Use reliability:=best_effort (the "
                "default), which receives from both kinds of publishers")
        self._qos_mismatch_reported = offenders
        return bool(offenders)

    @_guarded("incompatible-QoS event")
    def _on_incompatible_qos(self, event) -> None:
        if not self._check_qos():
            self._problem(
                "warning", "incompatible_qos",
                f"a publisher of one of this node's inputs offers an incompatible QoS "
                f"({qos_policy_name_from_kind(event.last_policy_kind)}): nothing is received from it")

    def _on_diagnostics_timer(self) -> None:
        try:
            self._check_qos()
            self._diag_pub.publish(self._diagnostics())
        except Exception as err:
            self._problem("error", f"unexpected:diagnostics:{type(err).__name__}",
                          f"diagnostics failed: {_describe(err)}")
        self._stats.start_window()

    def _diagnostics(self) -> DiagnosticArray:
        stats, pipeline = self._stats, self._pipeline
        elapsed = max(time.monotonic() - stats.window_start, 1e-3)
        rate = stats.window_processed / elapsed
        latencies = stats.window_latency_s
        mean_ms = 1e3 * sum(latencies) / len(latencies) if latencies else math.nan
        max_ms = 1e3 * max(latencies) if latencies else math.nan
        level, message = DiagnosticStatus.OK, f"{rate:.1f} Hz, {stats.last_faces} face(s)"
        if self._camera_error is not None:
            level, message = DiagnosticStatus.ERROR, self._camera_error
        elif stats.last_image_time is None or time.monotonic() - stats.last_image_time > 2.0:
            level, message = DiagnosticStatus.WARN, f"no images on {self._image_sub.topic_name}"
        elif self._camera is None and self._settings["fallback_hfov_deg"] <= 0:
            level, message = DiagnosticStatus.WARN, "no CameraInfo yet: images are skipped"
        elif latencies and mean_ms > LATENCY_WARN_S * 1e3:
            level, message = DiagnosticStatus.WARN, f"slow: {mean_ms:.0f} ms per image"
        values = {
            "rate_hz": f"{rate:.2f}",
            "latency_mean_ms": f"{mean_ms:.1f}",
            "latency_max_ms": f"{max_ms:.1f}",
            "backend": str(pipeline.backend),
            "faces": str(stats.last_faces),
            "detector_runs": str(pipeline.detector_runs),
            "frames_received": str(stats.received),
            "frames_processed": str(stats.processed),
            "frames_skipped": str(stats.skipped),
            "frames_dropped": str(stats.missing),
            "frames_lost_dds": str(stats.lost_dds),
            "camera_info": "valid" if self._camera is not None else (self._camera_error or "none yet"),
            # leak watch: all three return to 0 (publishers: stay constant) when no face is seen
            "tracks": str(len(pipeline.tracker.tracks) if pipeline.config.tracking.enabled else 0),
            "marker_ids": str(len(self._marker_ids)),
            "publishers": str(len(list(self.publishers))),
            "subscriptions": str(len(list(self.subscriptions))),
        }
        values.update({f"problems.{kind}": str(n) for kind, n in sorted(self._problem.counts.items())})
        values.update({f"stage_ms.{k}": f"{v:.2f}" for k, v in pipeline.stage_ms.items()})
        # the fully qualified name: several face3d nodes (namespaces) report apart
        name = f"{self.get_fully_qualified_name().lstrip('/')}: face pipeline"
        status = DiagnosticStatus(level=level, name=name, message=message, hardware_id=str(pipeline.backend),
                                  values=[KeyValue(key=k, value=v) for k, v in values.items()])
        return DiagnosticArray(header=self._diag_header(), status=[status])

    def _diag_header(self) -> Header:
        return Header(stamp=self.get_clock().now().to_msg())
