"""The node's parameters: ONE table, generated from PipelineConfig's field specs plus the node's own.

Every parameter has a name, a default, a description, and optionally a range, a set of choices and whether
it may change at run time ("dynamic"). From that one table come:
- the ParameterDescriptors (description, floating_point_range / integer_range, read_only for non-dynamic
  parameters, the choices in the description and in additional_constraints), see `descriptor()`;
- the validation used both when the node is configured and by its on-set-parameters callback, see
  `check_parameters()` (wrong type, NaN, out of range, unknown choice, read-only at run time);
- the PipelineConfig the node builds, see `pipeline_config()`.

Pipeline parameters are named "section.field" exactly as `PipelineConfig.flat()` names them
(e.g. `detector.min_detection_score`); the node's own are listed in NODE_PARAMS.
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any, Iterable

from rcl_interfaces.msg import FloatingPointRange, IntegerRange, ParameterDescriptor, SetParametersResult

from ..core.config import PipelineConfig, check_setting, iter_fields, sections


@dataclass(frozen=True)
class ParamSpec:
    """One parameter: what `ros2 param describe` shows and what validation checks."""

    name: str
    default: Any
    description: str
    lo: float | None = None
    hi: float | None = None
    choices: tuple[str, ...] | None = None
    dynamic: bool = False
    pipeline: bool = False      # a PipelineConfig field (goes to FacePipeline) rather than a node setting

    @property
    def type(self) -> type:
        return type(self.default)


# The node's own parameters (the pipeline's come from PipelineConfig).
NODE_PARAMS: tuple[ParamSpec, ...] = (
    ParamSpec("image_transport", "raw",
              "Input image transport: raw subscribes to `image` (sensor_msgs/Image), compressed to "
              "`image/compressed` (sensor_msgs/CompressedImage, jpeg or png)", choices=("raw", "compressed")),
    ParamSpec("reliability", "best_effort",
              "QoS reliability of the image and camera_info subscriptions: best_effort (the sensor-data "
              "profile camera drivers publish with; receives from both kinds of publishers) or reliable "
              "(receives nothing from a best-effort publisher)", choices=("best_effort", "reliable")),
    ParamSpec("fallback_hfov_deg", 0.0,
              "0 = wait for a valid CameraInfo (frames are skipped until one arrives); > 0 = until a valid "
              "CameraInfo arrives, assume an ideal centred pinhole camera with this horizontal field of "
              "view in degrees", lo=0.0, hi=179.0, dynamic=True),
    ParamSpec("frame_prefix", "",
              "Prefix of the published TF frames: <prefix>face_<id> and <prefix>gaze_<id>"),
    ParamSpec("publish_tentative", False,
              "Also publish faces whose track is not yet confirmed (seen in fewer than tracking.min_hits "
              "images); their track_state is STATE_TENTATIVE", dynamic=True),
    ParamSpec("markers.enabled", True,
              "Publish RViz markers (mesh, head axes, id and distance) on `markers` while someone "
              "subscribes", dynamic=True),
    ParamSpec("autostart", True,
              "Configure and activate the node at start-up (false: wait for the lifecycle transitions)"),
)


def pipeline_params() -> tuple[ParamSpec, ...]:
    """The PipelineConfig fields as parameters, named "section.field" (PipelineConfig.flat() keys)."""
    config = PipelineConfig()
    specs = []
    for sec_name, section in sections(config):
        for f in dataclasses.fields(section):
            meta = f.metadata
            specs.append(ParamSpec(f"{sec_name}.{f.name}", f.default, meta["description"], meta.get("lo"),
                                   meta.get("hi"), meta.get("choices"), bool(meta.get("dynamic")),
                                   pipeline=True))
    return tuple(specs)


def all_params() -> dict[str, ParamSpec]:
    """Every parameter of the node, by name: the pipeline's first, then the node's own."""
    specs = {s.name: s for s in pipeline_params() + NODE_PARAMS}
    assert len(specs) == len(pipeline_params()) + len(NODE_PARAMS), "a node parameter shadows a pipeline one"
    return specs


SPECS: dict[str, ParamSpec] = all_params()


def descriptor(spec: ParamSpec) -> ParameterDescriptor:
    """The ParameterDescriptor `ros2 param describe` shows for `spec`."""
    text = spec.description
    constraints = []
    if spec.choices:
        constraints.append("one of: " + ", ".join(spec.choices))
    if spec.lo is not None or spec.hi is not None:
        constraints.append(f"range [{'-inf' if spec.lo is None else spec.lo}, "
                           f"{'inf' if spec.hi is None else spec.hi}]")
    if not spec.dynamic:
        constraints.append("read-only after start-up (set it with --ros-args -p or a params file)")
    else:
        constraints.append("may be changed at run time")
    if spec.choices:
        text += " (one of: " + ", ".join(spec.choices) + ")"
    desc = ParameterDescriptor(description=text, additional_constraints="; ".join(constraints),
                               read_only=not spec.dynamic)
    if spec.lo is not None and spec.hi is not None:
        if spec.type is float:
            desc.floating_point_range = [FloatingPointRange(from_value=float(spec.lo), to_value=float(spec.hi),
                                                            step=0.0)]
        elif spec.type is int:
            desc.integer_range = [IntegerRange(from_value=int(spec.lo), to_value=int(spec.hi), step=1)]
    return desc


def check_value(spec: ParamSpec, value: Any) -> str | None:
    """Why `value` is not acceptable for `spec`, or None (the core's rule: config.check_setting)."""
    return check_setting(spec.name, value, spec.default, spec.lo, spec.hi, spec.choices)


def check_parameters(values: Iterable[tuple[str, Any]], *, configured: bool) -> SetParametersResult:
    """Validate ("name", value) pairs: used by on_configure (configured=False) and by the on-set-parameters
    callback (configured=True while the node holds a pipeline: then non-dynamic parameters are read-only).

    Names this table does not know (e.g. use_sim_time) pass through unchecked. All reasons are joined.
    """
    reasons = []
    for name, value in values:
        spec = SPECS.get(name)
        if spec is None:
            continue
        reason = check_value(spec, value)
        if reason is None and configured and not spec.dynamic:
            reason = (f"{name} is read-only at run time (it is used when the node is configured); set it "
                      "at start-up with --ros-args -p or a params file")
        if reason:
            reasons.append(reason)
    return SetParametersResult(successful=not reasons, reason="; ".join(reasons))


def coerce(spec: ParamSpec, value: Any) -> Any:
    """`value` in the spec's Python type (an integer given for a double parameter becomes a float)."""
    if spec.type is float and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    return value


def pipeline_config(values: dict[str, Any]) -> PipelineConfig:
    """A PipelineConfig from {"section.field": value} (other names are ignored); ValueError when invalid."""
    known = PipelineConfig().flat()
    return PipelineConfig().updated({k: coerce(SPECS[k], v) for k, v in values.items() if k in known}).check()


def pipeline_updates(values: dict[str, Any]) -> dict[str, Any]:
    """The pipeline's share of {"name": value}, as FacePipeline.update_config() takes it."""
    return {k: coerce(SPECS[k], v) for k, v in values.items() if k in SPECS and SPECS[k].pipeline}


def _self_check() -> None:
    """The table and PipelineConfig agree (run at import: a drift is a programming error, caught by any test)."""
    flat = PipelineConfig().flat()
    for name, value in flat.items():
        assert SPECS[name].default == value, name
    for _, f in iter_fields(PipelineConfig()):
        assert f.metadata.get("description"), f"PipelineConfig field {f.name} has no description"


_self_check()


def declare(node) -> dict[str, str]:
    """Declare every parameter on `node` (an rclpy Node) with its descriptor; returns the problems found in
    the start-up values ({name: reason}) (--ros-args -p, params files) instead of raising, so that on_configure can fail
    with the reason. A rejected start-up value leaves the parameter at its default.

    An integer given for a double parameter (`-p smoothing.beta:=1`) is accepted as that double.
    """
    from rclpy.exceptions import InvalidParameterTypeException, InvalidParameterValueException

    problems = {}
    overrides = getattr(node, "_parameter_overrides", {})   # rclpy keeps the start-up values here
    for spec in SPECS.values():
        try:
            node.declare_parameter(spec.name, spec.default, descriptor(spec))
            continue
        except (InvalidParameterTypeException, InvalidParameterValueException) as err:
            given = overrides[spec.name].value if spec.name in overrides else None
            reason = check_value(spec, given) or str(err)
        value = coerce(spec, given)
        if value is not given and check_value(spec, value) is None:
            node.declare_parameter(spec.name, value, descriptor(spec), ignore_override=True)
        else:
            node.declare_parameter(spec.name, spec.default, descriptor(spec), ignore_override=True)
            problems[spec.name] = reason
    return problems
