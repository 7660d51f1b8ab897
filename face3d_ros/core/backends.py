"""ONNX Runtime sessions, created in one place: backend choice, fallback, threads, CUDA graphs, TensorRT options.

`auto` tries TensorRT, then CUDA, then the CPU, keeping whichever onnxruntime build has; `cuda` and
`tensorrt` fall back down the same chain unless `strict` is set. The choice is logged once, in one line.
"""
from __future__ import annotations

import contextlib
import dataclasses
import io
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


_gpu_libraries_loaded = False


def load_gpu_libraries() -> None:
    """Load the CUDA and cuDNN libraries that pip installs beside onnxruntime-gpu (the nvidia-* wheels of its
    `[cuda,cudnn]` extras), once per process: they are not on the loader's path, and onnxruntime documents this
    call for them. Libraries installed system-wide (apt, the CUDA toolkit) are found either way (the lent GPU
    machine had those, so it could not show the difference); what is missing is reported when the provider
    fails to start."""
    global _gpu_libraries_loaded
    if _gpu_libraries_loaded or not hasattr(ort, "preload_dlls"):   # only onnxruntime-gpu >= 1.21 has it
        return
    _gpu_libraries_loaded = True
    printed = io.StringIO()
    with contextlib.redirect_stdout(printed):    # it prints each library it cannot load
        try:
            ort.preload_dlls()
        except (OSError, RuntimeError) as err:
            print(err)
    if printed.getvalue().strip():
        log.debug("onnxruntime.preload_dlls: %s", " ".join(printed.getvalue().split()))


def provider_chain(config: BackendConfig) -> list[str]:
    """The providers to ask onnxruntime for, best first, keeping only those this build has."""
    available = set(ort.get_available_providers())
    wanted = PROVIDER_CHAINS[config.backend]
    if available & {TRT, CUDA} & set(wanted):
        load_gpu_libraries()
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
        # cuDNN's heuristic picks the same fast kernels for these small models as its exhaustive search (H100:
        # equal ms per call) without timing every candidate at start: 17 s instead of 39 s to a first frame
        return {"device_id": config.device_id, "enable_cuda_graph": int(config.cuda_graph),
                "cudnn_conv_algo_search": "HEURISTIC"}
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


def batch_one(shape) -> tuple:
    """A model's input or output shape with its symbolic (batch) dimensions set to 1."""
    return tuple(d if isinstance(d, int) else 1 for d in shape)


class BoundRunner:
    """Runs a session through IO binding with fixed buffers on `device`, one crop (batch 1) per run: what a
    CUDA graph needs, as onnxruntime replays it on the buffers it was captured with. A batch of n crops is n
    runs, outputs stacked as one call would return them."""

    def __init__(self, session: ort.InferenceSession, device: str = "cuda", device_id: int = 0):
        inputs, outputs = session.get_inputs(), session.get_outputs()
        if len(inputs) != 1 or any(v.type != "tensor(float)" for v in inputs + outputs):
            raise ValueError("fixed buffers need one float input and float outputs")
        self.session, self.shape = session, batch_one(inputs[0].shape)
        self.binding = session.io_binding()
        self.input = ort.OrtValue.ortvalue_from_shape_and_type(self.shape, np.float32, device, device_id)
        self.binding.bind_ortvalue_input(inputs[0].name, self.input)
        self.outputs = []
        for output in outputs:
            value = ort.OrtValue.ortvalue_from_shape_and_type(batch_one(output.shape), np.float32, device, device_id)
            self.binding.bind_ortvalue_output(output.name, value)
            self.outputs.append(value)

    def __call__(self, tensor: np.ndarray) -> list[np.ndarray]:
        if tensor.shape[1:] != self.shape[1:]:
            raise ValueError(f"input of shape {tensor.shape}, the bound buffer is {self.shape}")
        rows = []
        for i in range(tensor.shape[0]):
            self.input.update_inplace(np.ascontiguousarray(tensor[i:i + 1], dtype=np.float32))
            self.session.run_with_iobinding(self.binding)
            # a copy: on the CPU numpy() is a view of the bound buffer, which the next run overwrites
            rows.append([np.array(value.numpy()) for value in self.outputs])
        return rows[0] if len(rows) == 1 else [np.concatenate(parts) for parts in zip(*rows)]


class OnnxModel:
    """One ONNX model in one session; remembers how much time it spent inside onnxruntime."""

    def __init__(self, path: Path, config: BackendConfig, providers: list[str] | None = None):
        self.path = Path(path)
        self._config, self._providers = config, list(providers or provider_chain(config))
        self._start_session()
        self._graph = None
        if self._graph_enabled and self.active_provider == CUDA:
            try:
                self._graph = BoundRunner(self.session, "cuda", config.device_id)
                for _ in range(3):   # onnxruntime captures on a thread's third run (after two regular ones)
                    self._graph(np.zeros(self._graph.shape, np.float32))
            except (RuntimeError, ValueError) as err:   # onnxruntime's errors are RuntimeErrors
                self._drop_graph(err)
        inputs = self.session.get_inputs()
        if len(inputs) != 1:
            raise ValueError(f"{self.path.name}: expected one input, found {len(inputs)}")
        self.input_name = inputs[0].name
        self.input_shape = tuple(inputs[0].shape)
        self.output_names = [o.name for o in self.session.get_outputs()]
        self.inference_s = 0.0
        self.calls = 0

    def _start_session(self, cuda_graph: bool | None = None) -> None:
        """A session on the first provider of the chain that starts. onnxruntime falls back silently to the next
        one (libraries missing or mismatched, no GPU, a bad device_id) and, doing so, drops our provider
        options: each fallback is reported (or refused when strict) and the session remade from there on."""
        cuda_graph = self._config.cuda_graph if cuda_graph is None else cuda_graph
        self.session = self._session(cuda_graph)
        while (active := self.session.get_providers()[0]) != (wanted := self._providers[0]):
            message = (f"{self.path.name}: onnxruntime could not start {wanted} (GPU, CUDA, cuDNN or TensorRT "
                       f"libraries missing or mismatched?) and fell back to {active}")
            if self._config.strict:
                raise BackendUnavailable(message + "; backend.strict forbids falling back")
            if (wanted, active) not in _fallbacks_reported:
                _fallbacks_reported.add((wanted, active))
                log.warning("%s (set backend.strict to fail instead)", message)
            if active not in self._providers:
                break
            self._providers = self._providers[self._providers.index(active):]
            self.session = self._session(cuda_graph)
        self.active_provider = active

    def _session(self, cuda_graph: bool) -> ort.InferenceSession:
        # a CUDA graph needs the whole model on CUDA: only when CUDA heads the chain (not behind TensorRT)
        self._graph_enabled = cuda_graph and self._providers[0] == CUDA
        config = dataclasses.replace(self._config, cuda_graph=self._graph_enabled)
        providers = [(p, _provider_options(p, config, self.path)) for p in self._providers]
        try:
            return ort.InferenceSession(str(self.path), sess_options=session_options(config), providers=providers)
        except Exception as err:   # onnxruntime's Fail (e.g. a node CUDA cannot run) is a plain Exception
            if not self._graph_enabled:
                raise
            self._warn_no_graph(err)
            return self._session(cuda_graph=False)

    def _drop_graph(self, err: Exception) -> None:
        """Go on without a CUDA graph (a new session: one with graphs enabled only runs on fixed buffers)."""
        self._warn_no_graph(err)
        self._graph = None
        self._start_session(cuda_graph=False)

    def _warn_no_graph(self, err: Exception) -> None:
        log.warning("%s: no CUDA graph (%s); running it without one", self.path.name, str(err).splitlines()[0])

    def __call__(self, tensor: np.ndarray) -> dict[str, np.ndarray]:
        start = time.perf_counter()
        outputs = None
        if self._graph is not None:
            try:
                outputs = self._graph(tensor)
            except RuntimeError as err:   # a capture on another thread failed (each thread captures its own)
                self._drop_graph(err)
        if outputs is None:
            outputs = self.session.run(self.output_names, {self.input_name: tensor})
        self.inference_s += time.perf_counter() - start
        self.calls += 1
        return dict(zip(self.output_names, outputs))

    @property
    def backend(self) -> str:
        return SHORT_NAMES.get(self.active_provider, self.active_provider)
