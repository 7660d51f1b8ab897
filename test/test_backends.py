"""Inference backends: the fixed-buffer runner a CUDA graph replays on, its fallback, and the backends
benchmark. No GPU here or in CI: the runner is checked on the CPU (the same IO binding, the buffers in host
memory); the CUDA graph itself was measured on a lent GPU (README, "Backends")."""
from __future__ import annotations

import dataclasses
import logging
import sys
from pathlib import Path

import numpy as np
import onnxruntime as real_ort
import pytest

from face3d_ros.core import PipelineConfig
from face3d_ros.core import backends as backends_module
from face3d_ros.core.backends import CPU, CUDA, TRT, BackendUnavailable, BoundRunner, OnnxModel
from face3d_ros.core.landmarks import FACE_INPUT, CropBatch
from face3d_ros.core.model_files import models_dir
from face3d_ros.core.synthetic import load_sample
from face3d_ros.core.types import Roi

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
import backends as backends_benchmark  # noqa: E402


@pytest.fixture(scope="module")
def crops():
    """Three real crops of the astronaut's face (moved and turned a little), as the landmark model takes them."""
    rois = [Roi(center=np.array([255.0 + dx, 135.0]), size=200.0, rotation=rot)
            for dx, rot in ((0.0, 0.0), (8.0, 0.1), (-6.0, -0.15))]
    batch, _ = CropBatch(FACE_INPUT).fill(load_sample(), rois)
    return batch.copy()


@pytest.fixture(scope="module")
def model():
    config = PipelineConfig().backend
    return OnnxModel(models_dir() / "face_landmark_with_attention.onnx", config)


def test_bound_runner_gives_the_sessions_outputs_one_crop_at_a_time(model, crops):
    runner = BoundRunner(model.session, "cpu")
    expected = model.session.run(model.output_names, {model.input_name: crops})
    for one in range(len(crops)):
        got = runner(crops[one:one + 1])
        for g, e in zip(got, expected):
            assert g.shape == e[one:one + 1].shape
            np.testing.assert_allclose(g, e[one:one + 1], rtol=1e-5, atol=1e-4)
    stacked = runner(crops)          # a batch: one run per crop, stacked as one call returns it
    for g, e in zip(stacked, expected):
        np.testing.assert_allclose(g, e, rtol=1e-5, atol=1e-4)
    # the landmarks really differ between the crops: the buffers are refilled, not replayed stale
    assert np.abs(stacked[0][1] - stacked[0][0]).max() > 1.0


def test_bound_runner_refuses_another_crop_size(model):
    with pytest.raises(ValueError, match="bound buffer"):
        BoundRunner(model.session, "cpu")(np.zeros((1, 128, 128, 3), np.float32))


def test_a_failing_graph_falls_back_to_plain_runs_with_one_warning(crops, caplog):
    model = OnnxModel(models_dir() / "face_landmark.onnx", PipelineConfig().backend)
    expected = model(crops[:1])

    class FailingGraph:
        def __call__(self, tensor):
            raise RuntimeError("CUDA failure 900: operation not permitted when stream is capturing\nmore")

    model._graph = FailingGraph()
    with caplog.at_level(logging.WARNING, logger="face3d_ros"):
        got = model(crops[:1])
        again = model(crops[:1])
    assert [r.getMessage() for r in caplog.records] == [
        "face_landmark.onnx: no CUDA graph (CUDA failure 900: operation not permitted when stream is capturing); "
        "running it without one"]
    for name in expected:
        np.testing.assert_array_equal(got[name], expected[name])
        np.testing.assert_array_equal(again[name], expected[name])
    assert model._graph is None


def test_backends_benchmark_reports_the_fallback_and_the_strict_refusal(capsys):
    assert backends_benchmark.main(["--backends", "cpu,cuda", "--frames", "3", "--warmup", "1"]) == 0
    out = capsys.readouterr().out
    assert "backend 'cuda' requested but this onnxruntime" in out
    assert "cuda: refused:" in out and "backend.strict forbids falling back" in out
    rows = [line for line in out.splitlines() if line.startswith("| 1 | tracking |")]
    assert len(rows) == 2 and all("| CPU |" in row for row in rows)
    # the same CPU provider on the same frames: the faces agree exactly
    assert rows[1].endswith("| 0.0000 | 0.0000 | 0.000 |")


RealSession = real_ort.InferenceSession   # the fixture below replaces it in the onnxruntime module


class FakeFail(Exception):
    """As onnxruntime's Fail: a plain Exception, not a RuntimeError."""


class GpuBuildSession:
    """onnxruntime-gpu's InferenceSession as it behaves, running on the CPU build: a provider in `broken` cannot
    start, and onnxruntime retries once WITHOUT provider options on CUDA + CPU (TensorRT asked for) or the CPU;
    a CUDA graph is refused with Fail when CUDA does not run the whole model (behind TensorRT, or `graph_fails`)."""
    created: list = []
    broken: set = set()
    graph_fails = False

    def __init__(self, path, sess_options=None, providers=()):
        names, options = [p for p, _ in providers], dict(providers)
        type(self).created.append((names, options))
        if options.get(CUDA, {}).get("enable_cuda_graph") and (names[0] != CUDA or self.graph_fails):
            raise FakeFail("[ONNXRuntimeError] : 1 : FAIL : This session cannot use the graph capture feature")
        if names[0] in self.broken:
            names = [p for p in ([CUDA, CPU] if names[0] == TRT and CUDA in names else [CPU]) if p not in self.broken]
        self._providers = names
        self._real = RealSession(path, sess_options, providers=[CPU])

    def get_providers(self):
        return self._providers

    def __getattr__(self, name):
        return getattr(self._real, name)


@pytest.fixture
def gpu_build(monkeypatch):
    monkeypatch.setattr(backends_module.ort, "InferenceSession", GpuBuildSession)
    # the graph's buffers in host memory: this build has no CUDA device
    monkeypatch.setattr(backends_module, "BoundRunner", lambda session, device, device_id: BoundRunner(session, "cpu"))
    monkeypatch.setattr(backends_module, "_fallbacks_reported", set())
    GpuBuildSession.created, GpuBuildSession.broken, GpuBuildSession.graph_fails = [], set(), False
    return GpuBuildSession


def gpu_model(providers, **config):
    return OnnxModel(models_dir() / "face_landmark.onnx",
                     dataclasses.replace(PipelineConfig().backend, **config), list(providers))


def test_tensorrt_libraries_missing_gives_cuda_with_our_options_and_a_graph(gpu_build, crops, caplog):
    gpu_build.broken = {TRT}
    with caplog.at_level(logging.WARNING, logger="face3d_ros"):
        model = gpu_model([TRT, CUDA, CPU], device_id=0)
    assert [r.getMessage().split(" (set")[0] for r in caplog.records] == [
        "face_landmark.onnx: onnxruntime could not start TensorrtExecutionProvider (GPU, CUDA, cuDNN or TensorRT "
        "libraries missing or mismatched?) and fell back to CUDAExecutionProvider"]
    (first, first_options), (second, second_options) = gpu_build.created
    assert first == [TRT, CUDA, CPU] and first_options[CUDA]["enable_cuda_graph"] == 0   # no graph behind TensorRT
    assert second == [CUDA, CPU] and second_options[CUDA]["enable_cuda_graph"] == 1      # remade with our options
    assert model.backend == "cuda" and model._graph is not None
    expected = RealSession(str(model.path), providers=[CPU]).run(None, {"image": crops[:1]})
    np.testing.assert_allclose(model(crops[:1])["landmarks"], expected[0], rtol=1e-5, atol=1e-4)


def test_tensorrt_that_starts_gets_no_cuda_graph_request(gpu_build):
    model = gpu_model([TRT, CUDA, CPU])
    assert model.backend == "tensorrt" and model._graph is None and len(gpu_build.created) == 1


def test_a_second_fallback_is_seen_too(gpu_build, caplog):
    gpu_build.broken = {TRT, CUDA}     # e.g. a device_id with no GPU behind it
    with caplog.at_level(logging.WARNING, logger="face3d_ros"):
        model = gpu_model([TRT, CUDA, CPU])
    assert model.backend == "cpu" and model.active_provider == CPU and model._graph is None
    assert "fell back to CPUExecutionProvider" in caplog.records[0].getMessage()
    with pytest.raises(BackendUnavailable, match="strict forbids"):
        gpu_model([CUDA, CPU], strict=True)


def test_a_model_cuda_cannot_capture_runs_without_a_graph(gpu_build, crops, caplog):
    gpu_build.graph_fails = True
    with caplog.at_level(logging.WARNING, logger="face3d_ros"):
        model = gpu_model([CUDA, CPU])
    assert model.backend == "cuda" and model._graph is None
    assert "no CUDA graph" in caplog.records[0].getMessage()
    assert model(crops[:1])["landmarks"].shape == (1, 1404)
