"""ONNX Runtime sessions, created in one place: backend choice, fallback, threads, TensorRT options.

`auto` tries TensorRT, then CUDA, then the CPU, keeping whichever onnxruntime build has; `cuda` and
`tensorrt` fall back down the same chain unless `strict` is set. The choice is logged once, in one line.
"""
from __future__ import annotations

import logging
import time
from pathlib import Path

import numpy as np
import onnxruntime as ort

from .config import BackendConfig

log = logging.getLogger("face3d_ros")

TRT, CUDA, CPU = "TensorrtExecutionProvider", "CUDAExecutionProvider", "CPUExecutionProvider"
PROVIDER_CHAINS = {"auto": [TRT, CUDA, CPU], "tensorrt": [TRT, CUDA, CPU], "cuda": [CUDA, CPU], "cpu": [CPU]}
SHORT_NAMES = {TRT: "tensorrt", CUDA: "cuda", CPU: "cpu"}


_fallbacks_reported: set[tuple[str, str]] = set()   # (wanted, got) pairs already warned about


class BackendUnavailable(RuntimeError):
    """The requested backend cannot run here and `strict` forbids falling back."""


def provider_chain(config: BackendConfig) -> list[str]:
    """The providers to ask onnxruntime for, best first, keeping only those this build has."""
    available = set(ort.get_available_providers())
    wanted = PROVIDER_CHAINS[config.backend]
    chain = [p for p in wanted if p in available]
    if config.backend != "auto" and wanted[0] not in available:
        message = (f"backend {config.backend!r} requested but this onnxruntime ({ort.__version__}) has no "
                   f"{wanted[0]} (available: {', '.join(sorted(available))}); install onnxruntime-gpu "
                   "with CUDA/cuDNN (and TensorRT) to use it")
        if config.strict:
            raise BackendUnavailable(message + "; backend.strict forbids falling back")
        log.warning("%s; falling back to %s (set backend.strict to fail instead)", message, SHORT_NAMES[chain[0]])
    return chain


def _provider_options(provider: str, config: BackendConfig, model_path: Path) -> dict:
    if provider == TRT:
        cache = Path(config.engine_cache_dir).expanduser() / model_path.stem
        cache.mkdir(parents=True, exist_ok=True)
        return {"device_id": config.device_id, "trt_fp16_enable": config.fp16,
                "trt_engine_cache_enable": True, "trt_engine_cache_path": str(cache),
                "trt_timing_cache_enable": True, "trt_timing_cache_path": str(cache)}
    if provider == CUDA:
        return {"device_id": config.device_id}
    return {}


def session_options(config: BackendConfig) -> ort.SessionOptions:
    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    options.intra_op_num_threads = config.threads
    options.inter_op_num_threads = 1
    # Idle worker threads busy-wait by default; on a robot's shared CPU that burns cores between frames.
    options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    if config.flush_denormals:
        # Denormal activations (tiny values the attention model produces on real faces) take a slow path in
        # the FPU; as zero they change no output here and the model runs ~1.4x faster.
        options.add_session_config_entry("session.set_denormal_as_zero", "1")
    options.log_severity_level = 3
    return options


class OnnxModel:
    """One ONNX model in one session; remembers how much time it spent inside onnxruntime."""

    def __init__(self, path: Path, config: BackendConfig, providers: list[str] | None = None):
        self.path = Path(path)
        providers = providers or provider_chain(config)
        self.session = ort.InferenceSession(
            str(self.path), sess_options=session_options(config),
            providers=[(p, _provider_options(p, config, self.path)) for p in providers])
        self.active_provider = self.session.get_providers()[0]
        if self.active_provider != providers[0]:
            # the provider is in this onnxruntime build but could not start (CUDA/cuDNN/TensorRT libraries
            # missing or mismatched, no GPU): onnxruntime silently used the next one
            message = (f"{self.path.name}: onnxruntime could not start {providers[0]} (GPU, CUDA, cuDNN or "
                       f"TensorRT libraries missing or mismatched?) and fell back to {self.active_provider}")
            if config.strict:
                raise BackendUnavailable(message + "; backend.strict forbids falling back")
            if (providers[0], self.active_provider) not in _fallbacks_reported:
                _fallbacks_reported.add((providers[0], self.active_provider))
                log.warning("%s (set backend.strict to fail instead)", message)
        inputs = self.session.get_inputs()
        if len(inputs) != 1:
            raise ValueError(f"{self.path.name}: expected one input, found {len(inputs)}")
        self.input_name = inputs[0].name
        self.input_shape = tuple(inputs[0].shape)
        self.output_names = [o.name for o in self.session.get_outputs()]
        self.inference_s = 0.0
        self.calls = 0

    def __call__(self, tensor: np.ndarray) -> dict[str, np.ndarray]:
        start = time.perf_counter()
        outputs = self.session.run(self.output_names, {self.input_name: tensor})
        self.inference_s += time.perf_counter() - start
        self.calls += 1
        return dict(zip(self.output_names, outputs))

    @property
    def backend(self) -> str:
        return SHORT_NAMES.get(self.active_provider, self.active_provider)
