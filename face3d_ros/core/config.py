"""Pipeline configuration: one typed source of defaults, ranges and validation.

The ROS node generates its parameter descriptors from the FIELD SPECS here, so a default, a range or a
description lives in exactly one place. `validate()` returns the reasons a configuration is rejected.
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any

BACKENDS = ("auto", "cpu", "cuda", "tensorrt")
DETECTOR_RANGES = ("short", "full", "both")
IRIS_MODELS = ("attention", "iris_landmark")


def spec(default: Any, description: str, *, lo: float | None = None, hi: float | None = None,
         choices: tuple[str, ...] | None = None, dynamic: bool = False) -> Any:
    """A dataclass field carrying its description, range and whether it may change at run time."""
    return field(default=default, metadata={"description": description, "lo": lo, "hi": hi,
                                            "choices": choices, "dynamic": dynamic})


@dataclass
class BackendConfig:
    backend: str = spec("auto", "Inference backend: auto (TensorRT > CUDA > CPU, whichever is installed), "
                        "cpu, cuda or tensorrt", choices=BACKENDS)
    strict: bool = spec(False, "Fail instead of falling back when the requested backend is unavailable")
    device_id: int = spec(0, "GPU index for cuda/tensorrt", lo=0, hi=63)
    threads: int = spec(1, "CPU threads per model (intra-op; these small models run fastest on 1), and OpenCV's "
                        "threads for the process (its idle workers spin: at its default, ~0.7 ms of a second core per "
                        "frame for a 0.05 ms faster crop); 0 leaves both to the libraries", lo=0, hi=256)
    flush_denormals: bool = spec(True, "CPU: treat denormal floats as zero inside onnxruntime (the attention model "
                                 "meets many on real images: 4.4 -> 3.2 ms, outputs bit-identical). onnxruntime sets "
                                 "this on the thread that creates the pipeline, for its numpy too")
    cuda_graph: bool = spec(True, "CUDA: replay each model as a captured CUDA graph, one crop per replay (these "
                            "small models are bound by kernel launches: on an H100 the landmark model takes 2.1 ms "
                            "instead of 6.6); falls back to plain runs where capture fails")
    fp16: bool = spec(True, "TensorRT: allow fp16 kernels")
    engine_cache_dir: str = spec("~/.cache/face3d_ros/trt_engines", "TensorRT engine cache directory")
    models_dir: str = spec("", "Folder with the ONNX models and canonical geometry; empty = the installed ones")


@dataclass
class DetectorConfig:
    detector_range: str = spec("both", "Which face detector runs: short (faces within ~2 m, fastest), full "
                               "(~0.3-5 m, misses faces that fill much of the image) or both (single images: both, the "
                               "landmark model picks the better crop of a face both find; while tracking with no face "
                               "in view, the two take turns, one per image)",
                               choices=DETECTOR_RANGES)
    min_detection_score: float = spec(0.4, "Minimum face detector score (the landmark model's face-presence score "
                                      "then confirms each face, so small far faces, scored 0.4-0.6, are kept)",
                                      lo=0.0, hi=1.0, dynamic=True)
    nms_iou: float = spec(0.3, "IoU above which detections are merged (weighted NMS)", lo=0.0, hi=1.0,
                          dynamic=True)
    max_faces: int = spec(10, "Most faces processed per image (largest first); while this many are tracked the "
                          "detector does not look for more", lo=1, hi=100, dynamic=True)


@dataclass
class LandmarkConfig:
    min_landmark_score: float = spec(0.5, "Minimum face-presence score of the landmark model; below it the "
                                     "face is dropped (and, when tracking, the detector is run again)",
                                     lo=0.0, hi=1.0, dynamic=True)
    refine_iris: bool = spec(True, "10 iris points (478 in all) and the iris-based metric scale; false: the plain "
                             "468-point mesh model alone (fastest)")
    iris_model: str = spec("attention", "How the 478 points are made: attention (MediaPipe's face_landmark_with_"
                           "attention, one pass that also refines lips and eyes) or iris_landmark (468-point mesh "
                           "+ the iris model on two 64x64 eye crops: higher-resolution irises, ~2 ms more per "
                           "face)", choices=IRIS_MODELS)
    second_pass: bool = spec(True, "Single images (tracking off): run the landmark model again on the crop its "
                             "own landmarks give, better aligned than the detector's box (+1 landmark call per "
                             "face; 68-point NME 6.6% -> 5.8% on the AFLW2000 sample)")
    mirror_average: bool = spec(True, "Single images (tracking off): also run the landmark model on the mirrored "
                                "crop and average the two (cancels part of its left-right bias: AFLW2000 "
                                "sample MAE 4.64 -> 4.34 deg; +1 landmark call per face)")
    roi_scale: float = spec(1.5, "Landmark crop size relative to the face box (MediaPipe uses 1.5)",
                            lo=1.0, hi=3.0)


@dataclass
class PoseConfig:
    iris_scale: bool = spec(True, "Correct the head's metric size (and so its depth) from the iris diameter "
                            "when both irises are seen well", dynamic=True)
    iris_diameter_m: float = spec(0.0117, "Human iris diameter used for the metric scale, metres",
                                  lo=0.008, hi=0.015, dynamic=True)


@dataclass
class TrackingConfig:
    enabled: bool = spec(True, "Track faces over time: stable ids, ROI tracking, smoothing")
    detect_interval: int = spec(10, "Run the detector at least every N images to find new faces while "
                                "tracking (1 = every image)", lo=1, hi=1000, dynamic=True)
    min_hits: int = spec(2, "Images a new face must be seen before it is published", lo=1, hi=100,
                         dynamic=True)
    max_age: int = spec(5, "Images a face may go unseen before its track is dropped", lo=0, hi=1000,
                        dynamic=True)
    max_gap_s: float = spec(0.5, "A track unseen for longer than this (s) is dropped and its filters "
                            "reset", lo=0.0, hi=60.0, dynamic=True)
    min_iou: float = spec(0.2, "Minimum box IoU to associate a face with a track", lo=0.0, hi=1.0,
                          dynamic=True)


@dataclass
class SmoothingConfig:
    enabled: bool = spec(True, "One Euro smoothing of landmarks, translation and rotation", dynamic=True)
    min_cutoff: float = spec(0.3, "One Euro minimum cutoff frequency (Hz): lower = less jitter, more lag",
                             lo=0.001, hi=100.0, dynamic=True)
    beta: float = spec(4.0, "One Euro speed coefficient: higher = less lag on fast motion", lo=0.0,
                       hi=100.0, dynamic=True)
    d_cutoff: float = spec(1.0, "One Euro cutoff for the derivative (Hz)", lo=0.001, hi=100.0, dynamic=True)
    min_pose_confidence: float = spec(0.3, "Faces below this pose confidence (bad fit, occluded) do not update "
                                      "the filters: the last smoothed pose is published instead",
                                      lo=0.0, hi=1.0, dynamic=True)


@dataclass
class PipelineConfig:
    backend: BackendConfig = field(default_factory=BackendConfig)
    detector: DetectorConfig = field(default_factory=DetectorConfig)
    landmarks: LandmarkConfig = field(default_factory=LandmarkConfig)
    pose: PoseConfig = field(default_factory=PoseConfig)
    tracking: TrackingConfig = field(default_factory=TrackingConfig)
    smoothing: SmoothingConfig = field(default_factory=SmoothingConfig)

    def validate(self) -> list[str]:
        """Reasons this configuration is invalid (empty when it is valid)."""
        return [reason for section, f in iter_fields(self)
                if (reason := check_value(f, getattr(section, f.name))) is not None]

    def check(self) -> "PipelineConfig":
        reasons = self.validate()
        if reasons:
            raise ValueError("invalid configuration: " + "; ".join(reasons))
        return self

    def flat(self) -> dict[str, Any]:
        """{"section.name": value}: the ROS parameter names."""
        return {f"{sec_name}.{f.name}": getattr(section, f.name)
                for sec_name, section in sections(self) for f in dataclasses.fields(section)}

    def updated(self, values: dict[str, Any]) -> "PipelineConfig":
        """A copy with "section.name" values replaced; unknown names raise KeyError."""
        new = dataclasses.replace(self, **{name: dataclasses.replace(sec) for name, sec in sections(self)})
        for key, value in values.items():
            sec_name, _, name = key.partition(".")
            section = getattr(new, sec_name, None)
            if section is None or name not in {f.name for f in dataclasses.fields(section)}:
                raise KeyError(f"unknown configuration key {key!r}")
            setattr(section, name, value)
        return new


def sections(config: PipelineConfig):
    return [(f.name, getattr(config, f.name)) for f in dataclasses.fields(config)]


def iter_fields(config: PipelineConfig):
    for _, section in sections(config):
        for f in dataclasses.fields(section):
            yield section, f


TYPE_NAMES = {bool: "true or false", int: "an integer", float: "a number", str: "a string"}


def check_value(f: dataclasses.Field, value: Any) -> str | None:
    """Why `value` is not acceptable for field `f`, or None."""
    meta = f.metadata
    return check_setting(f.name, value, f.default, meta.get("lo"), meta.get("hi"), meta.get("choices"))


def check_setting(name: str, value: Any, default: Any, lo: float | None = None, hi: float | None = None,
                  choices: tuple[str, ...] | None = None) -> str | None:
    """Why `value` cannot replace `default` for setting `name` (type, choices, NaN, range), or None.
    The one validation rule, shared by the core's config and the ROS parameters."""
    expected = type(default)
    if expected is float and isinstance(value, int) and not isinstance(value, bool):
        value = float(value)
    if not isinstance(value, expected) or (expected is int and isinstance(value, bool)):
        return f"{name} must be {TYPE_NAMES[expected]}, got {value!r}"
    if choices and value not in choices:
        return f"{name} must be one of {', '.join(choices)}, got {value!r}"
    if expected in (int, float):
        if value != value:  # NaN
            return f"{name} must be a number, got NaN"
        if lo is not None and value < lo or hi is not None and value > hi:
            return f"{name} must be in [{lo}, {hi}], got {value}"
    return None
