"""Inference backends: the fixed-buffer runner a CUDA graph replays on, its fallback, and the backends
benchmark. No GPU here or in CI: the runner is checked on the CPU (the same IO binding, the buffers in host
memory); the CUDA graph itself was measured on a lent GPU (README, "Backends")."""
from __future__ import annotations

import logging
import sys
from pathlib import Path

import numpy as np
import pytest

from face3d_ros.core import PipelineConfig
from face3d_ros.core.backends import BoundRunner, OnnxModel
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
