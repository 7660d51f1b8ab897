"""Shipped model files: manifest hashes and ONNX I/O contract (onnxruntime + numpy + opencv only)."""
import argparse
import hashlib
import importlib.util
import shutil
from pathlib import Path

import cv2
import numpy as np
import onnxruntime as ort
import pytest

from face3d_ros.core.model_files import check_model_files, models_dir, read_manifest

ROOT = Path(__file__).resolve().parent.parent
MODELS = ROOT / "models"
IMAGE = Path(__file__).resolve().parents[1] / "face3d_ros" / "data" / "astronaut.png"  # NASA, public domain

# model file -> (input name, input shape, [(output name, output shape)], pixel range); "N" = dynamic batch
CONTRACT = {
    "face_detection_short_range.onnx": (
        "image", [1, 128, 128, 3], [("regressors", [1, 896, 16]), ("scores", [1, 896, 1])], (-1.0, 1.0)),
    "face_detection_full_range.onnx": (
        "image", [1, 192, 192, 3], [("regressors", [1, 2304, 16]), ("scores", [1, 2304, 1])], (-1.0, 1.0)),
    "face_landmark.onnx": (
        "image", ["N", 192, 192, 3], [("landmarks", ["N", 1404]), ("face_flag", ["N", 1])], (0.0, 1.0)),
    "iris_landmark.onnx": (
        "image", ["N", 64, 64, 3], [("eye_contour", ["N", 213]), ("iris", ["N", 15])], (0.0, 1.0)),
    "face_landmark_with_attention.onnx": (
        "image", ["N", 192, 192, 3],
        [("landmarks", ["N", 1404]), ("lips", ["N", 160]), ("left_eye", ["N", 142]), ("right_eye", ["N", 142]),
         ("left_iris", ["N", 10]), ("right_iris", ["N", 10]), ("face_flag", ["N", 1])], (0.0, 1.0)),
}


def _manifest():
    return read_manifest(MODELS)


def test_manifest_files_exist_and_match():
    entries = _manifest()
    assert entries, "MANIFEST.sha256 is empty"
    for name, digest in entries.items():
        path = MODELS / name
        assert path.is_file(), f"{name} listed in MANIFEST.sha256 but missing"
        assert hashlib.sha256(path.read_bytes()).hexdigest() == digest, f"{name}: sha256 mismatch"


def test_every_shipped_file_is_in_manifest():
    """Every file the package ships from models/ (models, geometry, licence), not only the ONNX ones: the load
    time check refuses a file its manifest does not list."""
    entries = _manifest()
    shipped = sorted(p.name for p in MODELS.iterdir()
                     if p.is_file() and p.suffix != ".py" and p.name not in ("README.md", "MANIFEST.sha256"))
    assert set(CONTRACT) <= set(shipped) and {"LICENSE", "NOTICE", "canonical_face_model.obj"} <= set(shipped)
    assert [name for name in shipped if name not in entries] == []


def test_load_time_check_refuses_unlisted_files_and_a_missing_manifest(tmp_path):
    """A corrupt file whose manifest line was removed, or whose manifest was deleted, must not pass unchecked."""
    folder = tmp_path / "models"
    shutil.copytree(MODELS, folder, ignore=shutil.ignore_patterns("*.py", "__pycache__", "*.onnx"))
    names = ["canonical_face_model.obj", "face_model_with_iris.obj"]
    assert check_model_files(folder, names) == []
    (folder / names[0]).write_text("v 0 0 0\n")
    manifest = folder / "MANIFEST.sha256"
    manifest.write_text("".join(line + "\n" for line in manifest.read_text().splitlines() if names[0] not in line))
    assert check_model_files(folder, names) == [f"{names[0]} is not listed in MANIFEST.sha256"]
    manifest.unlink()
    (problem,) = check_model_files(folder, names)
    assert problem.startswith("MANIFEST.sha256 is missing")


def test_a_models_folder_named_in_the_environment_is_used_alone(monkeypatch, tmp_path):
    """$FACE3D_MODELS_DIR pointing at the wrong folder must say so, not quietly load the installed models."""
    monkeypatch.setenv("FACE3D_MODELS_DIR", str(tmp_path / "nowhere"))
    models_dir.cache_clear()
    try:
        with pytest.raises(FileNotFoundError, match="nowhere"):
            models_dir()
        monkeypatch.setenv("FACE3D_MODELS_DIR", str(MODELS))
        models_dir.cache_clear()
        assert models_dir() == MODELS
    finally:
        models_dir.cache_clear()


def _build_models_script():
    spec = importlib.util.spec_from_file_location("build_models", MODELS / "build_models.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_model_rebuild_refuses_to_delete_a_folder_that_is_not_a_venv_or_rebuild_unknown_models(tmp_path):
    build_models = _build_models_script()
    precious = tmp_path / "data" / "precious.txt"
    precious.parent.mkdir()
    precious.write_text("keep")
    with pytest.raises(SystemExit, match="not a virtual environment"):
        build_models.ensure_venv(precious.parent, reuse=False)
    assert precious.read_text() == "keep"
    with pytest.raises(SystemExit, match="unknown model"):   # a typo used to rebuild nothing and succeed
        build_models.build(argparse.Namespace(only="face_landmarks", wheel=None, prelu=None))


@pytest.fixture(scope="module")
def rgb():
    bgr = cv2.imread(str(IMAGE), cv2.IMREAD_COLOR)
    assert bgr is not None, f"cannot read {IMAGE}"
    return cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)


def _shape(vi):
    return [d if isinstance(d, int) else "N" for d in vi.shape]


@pytest.mark.parametrize("filename", sorted(CONTRACT))
def test_onnx_io_and_finite_outputs(filename, rgb):
    in_name, in_shape, outputs, (lo, hi) = CONTRACT[filename]
    sess = ort.InferenceSession(str(MODELS / filename), providers=["CPUExecutionProvider"])
    inputs = sess.get_inputs()
    assert [i.name for i in inputs] == [in_name]
    assert _shape(inputs[0]) == in_shape
    assert inputs[0].type == "tensor(float)"
    assert [(o.name, _shape(o)) for o in sess.get_outputs()] == outputs

    size = in_shape[1]
    if filename.startswith("face_detection"):
        img = rgb
    elif filename.startswith("face_landmark"):
        img = rgb[23:213, 130:320]  # the astronaut's face
    else:
        img = rgb[90:122, 188:220]  # her right eye
    x = cv2.resize(img, (size, size), interpolation=cv2.INTER_AREA).astype(np.float32) / 255.0
    x = (x * (hi - lo) + lo)[None]
    results = sess.run(None, {in_name: x})
    for (name, shape), arr in zip(outputs, results):
        assert list(arr.shape) == [1 if d == "N" else d for d in shape], name
        assert arr.dtype == np.float32
        assert np.all(np.isfinite(arr)), f"{filename}:{name} has non-finite values"
