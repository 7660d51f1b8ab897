#!/usr/bin/env python3
"""Rebuild the ONNX face models and geometry files in models/ from scratch.

What it does:
  1. creates a throwaway virtual environment (default /tmp/face3d-model-build;
     ``--reuse-venv`` keeps an existing one) and pip-installs the pinned
     converter tool chain below (mediapipe 0.10.21 wheel, tensorflow-cpu, tf2onnx);
  2. downloads the mediapipe==0.10.21 wheel for this platform (pip download)
     and extracts four Apache-2.0 TFLite models from it;
  3. densifies the sparse weights of the full-range detector (TFLite
     interpreter without the XNNPACK delegate; dense tensors become constants,
     DENSIFY ops are dropped);
  4. converts each model with tf2onnx (opset 17), renames inputs/outputs,
     makes the batch dimension of face_landmark / iris_landmark dynamic,
     rewrites PReLU (see README.md, "Speed") and canonicalises the graph
     (no producer/doc fields, stable tensor/node names, stable order);
  5. copies the canonical face geometry + licence, writes NOTICE and
     MANIFEST.sha256, and reports whether the rebuilt bytes equal the previous
     manifest.

Usage:
    python models/build_models.py                # full rebuild
    python models/build_models.py --reuse-venv   # skip pip if venv exists
    python models/build_models.py --venv DIR     # other venv location

Only the build needs mediapipe/tensorflow; the shipped product needs
onnxruntime + numpy (+ opencv for image handling).
"""
from __future__ import annotations

import argparse
import hashlib
import json
import os
import shutil
import subprocess
import sys
import tempfile
import zipfile
from pathlib import Path

MODELS_DIR = Path(__file__).resolve().parent
DEFAULT_VENV = Path("/tmp/face3d-model-build")
DATA_GEOMETRY = Path(os.environ.get(
    "FACE3D_GEOMETRY_DIR",
    MODELS_DIR.parent.parent / "shared" / "data" / "canonical_face_geometry"))

# Versions verified together on Python 3.11 / x86_64 (mediapipe 0.10.21 needs numpy<2;
# tensorflow-cpu 2.19.1 is the newest that resolves with it).
PINS = [
    "mediapipe==0.10.21",
    "numpy==1.26.4",
    "tensorflow-cpu==2.19.1",
    "tf2onnx==1.17.0",
    "onnx==1.22.0",
    "onnxruntime==1.32.0",
    "protobuf==4.25.9",
    "flatbuffers==25.12.19",
    "opencv-contrib-python==4.11.0.86",
]
MEDIAPIPE_WHEEL_SPEC = "mediapipe==0.10.21"
OPSET = 17

# name -> (path inside the mediapipe wheel, output file, input size, output names)
MODELS = {
    "face_detection_short_range": dict(
        wheel_path="mediapipe/modules/face_detection/face_detection_short_range.tflite",
        onnx="face_detection_short_range.onnx",
        inputs=["image"], outputs=["regressors", "scores"], dynamic_batch=False),
    "face_detection_full_range": dict(
        wheel_path="mediapipe/modules/face_detection/face_detection_full_range_sparse.tflite",
        onnx="face_detection_full_range.onnx",
        inputs=["image"], outputs=["regressors", "scores"], dynamic_batch=False),
    "face_landmark": dict(
        wheel_path="mediapipe/modules/face_landmark/face_landmark.tflite",
        onnx="face_landmark.onnx",
        inputs=["image"], outputs=["landmarks", "face_flag"], dynamic_batch=True,
        # TFLite outputs are 1x1x1x1404 and 1x1x1x1; ship them as Nx1404 and Nx1.
        flatten_outputs=True),
    "iris_landmark": dict(
        wheel_path="mediapipe/modules/iris_landmark/iris_landmark.tflite",
        onnx="iris_landmark.onnx",
        inputs=["image"], outputs=["eye_contour", "iris"], dynamic_batch=True),
    # 468 mesh points plus refined lips, eyes and irises in one pass (MediaPipe's refine_landmarks=True
    # model). Its three MediaPipe custom ops become standard ONNX ops (replace_mediapipe_custom_ops).
    "face_landmark_with_attention": dict(
        wheel_path="mediapipe/modules/face_landmark/face_landmark_with_attention.tflite",
        onnx="face_landmark_with_attention.onnx",
        inputs=["image"],
        outputs=["landmarks", "lips", "left_eye", "right_eye", "left_iris", "right_iris", "face_flag"],
        dynamic_batch=True, flatten_outputs=True, mediapipe_custom_ops=True),
}
# Which mesh points each refined region of face_landmark_with_attention replaces, stored in the ONNX file's
# metadata under this key (JSON). The lists are the region crops' subset_idxs (Landmarks2TransformMatrix
# options), which equal MediaPipe's tensors_to_face_landmarks_with_attention.pbtxt indexes_mapping;
# check_models.py compares the decoded 478 points with MediaPipe's own graph.
REFINEMENT_METADATA_KEY = "face3d.refinement"
REGION_BY_ROTATION_POINTS = {(61, 291): "lips", (33, 133): "left_eye", (362, 263): "right_eye"}

GEOMETRY_FILES = {  # shipped name -> source name in DATA_GEOMETRY
    "canonical_face_model.obj": "canonical_face_model.obj",
    "face_model_with_iris.obj": "face_model_with_iris.obj",
    "geometry_pipeline_metadata_landmarks.pbtxt": "geometry_pipeline_metadata_landmarks.pbtxt",
    "LICENSE": "LICENSE.mediapipe",
}

NOTICE_TEXT = """\
face3d_ros models/ -- provenance and licence
==============================================

All model and geometry files in this folder are Apache-2.0 material from
Google's MediaPipe (Copyright The MediaPipe Authors); the licence text is in
LICENSE (a copy of MediaPipe's LICENSE). They are redistributed under that
licence.

ONNX models (converted derivatives, NOT the original files):
  face_detection_short_range.onnx  <- mediapipe==0.10.21 wheel (PyPI),
        mediapipe/modules/face_detection/face_detection_short_range.tflite
  face_detection_full_range.onnx   <- mediapipe==0.10.21 wheel (PyPI),
        mediapipe/modules/face_detection/face_detection_full_range_sparse.tflite
        (sparse weights densified before conversion)
  face_landmark.onnx               <- mediapipe==0.10.21 wheel (PyPI),
        mediapipe/modules/face_landmark/face_landmark.tflite
  iris_landmark.onnx               <- mediapipe==0.10.21 wheel (PyPI),
        mediapipe/modules/iris_landmark/iris_landmark.tflite
  face_landmark_with_attention.onnx <- mediapipe==0.10.21 wheel (PyPI),
        mediapipe/modules/face_landmark/face_landmark_with_attention.tflite
        (its three MediaPipe custom ops, Landmarks2TransformMatrix,
        TransformTensorBilinear and TransformLandmarks, re-expressed with
        standard ONNX ops following MediaPipe's Apache-2.0 reference kernels;
        the refined regions' mesh indices stored in the model's metadata)

  Modifications: converted from TFLite to ONNX (opset 17) with tf2onnx 1.17.0
  by models/build_models.py; fp16 weights stored as float32; inputs/outputs
  renamed; batch dimension made dynamic (landmark and iris models); PReLU
  rewritten as an equivalent expression; graph canonicalised (names, order,
  metadata). Numerical results match the TFLite originals to < 1e-3
  (see README.md and models/check_models.py).

Canonical face geometry (unmodified copies):
  canonical_face_model.obj, face_model_with_iris.obj,
  geometry_pipeline_metadata_landmarks.pbtxt
        <- github.com/google/mediapipe, commit 9d880778,
           mediapipe/modules/face_geometry/data/
  LICENSE <- MediaPipe's LICENSE (Apache License 2.0)
"""


# --------------------------------------------------------------------------
# Stage 1: run with any python3 >= 3.9; manages the venv, then re-executes
# this file inside it.
# --------------------------------------------------------------------------

def ensure_venv(venv: Path, reuse: bool) -> Path:
    py = venv / "bin" / "python"
    if reuse and py.exists():
        print(f"[venv] reusing {venv}")
        return py
    if venv.exists():
        if not (venv / "pyvenv.cfg").is_file():   # never delete a folder that is not a venv (e.g. a typo)
            raise SystemExit(f"{venv} exists and is not a virtual environment (no pyvenv.cfg): refusing to "
                             "delete it; pass another --venv")
        print(f"[venv] removing old {venv}")
        shutil.rmtree(venv)
    print(f"[venv] creating {venv} with {sys.executable}")
    subprocess.check_call([sys.executable, "-m", "venv", str(venv)])
    subprocess.check_call([str(py), "-m", "pip", "install", "-q", "--upgrade", "pip"])
    print("[venv] pip install " + " ".join(PINS))
    subprocess.check_call([str(py), "-m", "pip", "install", "-q", *PINS])
    return py


def in_build_env() -> bool:
    try:
        import tf2onnx  # noqa: F401
        import tensorflow  # noqa: F401
        import mediapipe  # noqa: F401
        return True
    except Exception:
        return False


# --------------------------------------------------------------------------
# Stage 2: inside the venv.
# --------------------------------------------------------------------------

def sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def fetch_wheel(workdir: Path) -> Path:
    """pip download the mediapipe wheel for this interpreter/platform."""
    dest = workdir / "wheel"
    dest.mkdir(parents=True, exist_ok=True)
    subprocess.check_call([sys.executable, "-m", "pip", "download", "-q", "--no-deps",
                           "--only-binary=:all:", "-d", str(dest), MEDIAPIPE_WHEEL_SPEC])
    wheels = sorted(dest.glob("mediapipe-0.10.21-*.whl"))
    if not wheels:
        raise SystemExit("mediapipe 0.10.21 wheel not found after pip download")
    return wheels[0]


def extract_tflite(wheel: Path, workdir: Path) -> dict:
    out = {}
    with zipfile.ZipFile(wheel) as z:
        for name, spec in MODELS.items():
            data = z.read(spec["wheel_path"])
            p = workdir / Path(spec["wheel_path"]).name
            p.write_bytes(data)
            out[name] = p
            print(f"[extract] {spec['wheel_path']} ({len(data)} B, sha256 {hashlib.sha256(data).hexdigest()[:16]})")
    return out


def densify_tflite(src: Path, dst: Path) -> int:
    """Replace DENSIFY ops by constant dense tensors. Returns the number removed."""
    import numpy as np
    import tensorflow as tf
    from tensorflow.lite.python import schema_py_generated as schema
    from tensorflow.lite.tools import flatbuffer_utils as fbu

    model = fbu.read_model(str(src))
    densify_code = schema.BuiltinOperator.DENSIFY

    def opcode(op_index):
        oc = model.operatorCodes[op_index]
        return max(oc.builtinCode, oc.deprecatedBuiltinCode)

    assert len(model.subgraphs) == 1
    sg = model.subgraphs[0]
    targets = [(i, op) for i, op in enumerate(sg.operators) if opcode(op.opcodeIndex) == densify_code]
    if not targets:
        shutil.copyfile(src, dst)
        return 0

    # Run the reference interpreter WITHOUT the XNNPACK delegate (with it the
    # preserved intermediate tensors are not the densified weights).
    interp = tf.lite.Interpreter(
        model_path=str(src),
        experimental_op_resolver_type=tf.lite.experimental.OpResolverType.BUILTIN_WITHOUT_DEFAULT_DELEGATES,
        experimental_preserve_all_tensors=True)
    interp.allocate_tensors()
    inp = interp.get_input_details()[0]
    interp.set_tensor(inp["index"], np.zeros(inp["shape"], dtype=inp["dtype"]))
    interp.invoke()

    for _, op in targets:
        out_idx = op.outputs[0]
        dense = np.ascontiguousarray(interp.get_tensor(out_idx))
        t = sg.tensors[out_idx]
        assert list(dense.shape) == list(t.shape), (dense.shape, t.shape)
        buf = schema.BufferT()
        buf.data = np.frombuffer(dense.tobytes(), dtype=np.uint8).copy()
        model.buffers.append(buf)
        t.buffer = len(model.buffers) - 1
        # The sparse source tensor is now unused: give it the dense data too
        # (same shape), so converters do not try to read it as a dense buffer.
        s_t = sg.tensors[op.inputs[0]]
        assert list(s_t.shape) == list(t.shape) and s_t.type == t.type
        s_t.sparsity = None
        s_t.buffer = t.buffer
    remove = {i for i, _ in targets}
    sg.operators = [op for i, op in enumerate(sg.operators) if i not in remove]
    fbu.write_model(model, str(dst))
    return len(targets)


def tflite_to_onnx(tflite_path: Path):
    import tf2onnx
    model_proto, _ = tf2onnx.convert.from_tflite(str(tflite_path), opset=OPSET)
    return model_proto


# ---------------------------- graph rewriting -----------------------------

def rename_io(model, new_inputs, new_outputs):
    g = model.graph
    mapping = {}
    for vi, new in zip(g.input, new_inputs):
        mapping[vi.name] = new
    for vi, new in zip(g.output, new_outputs):
        mapping[vi.name] = new
    for vi in list(g.input) + list(g.output) + list(g.value_info):
        if vi.name in mapping:
            vi.name = mapping[vi.name]
    for n in g.node:
        for i, x in enumerate(n.input):
            if x in mapping:
                n.input[i] = mapping[x]
        for i, x in enumerate(n.output):
            if x in mapping:
                n.output[i] = mapping[x]


def make_dynamic_batch(model, flatten_outputs=False):
    """Set dim 0 of input/outputs to 'N' and patch Reshape targets that hard-code batch 1."""
    import numpy as np
    from onnx import numpy_helper, helper, TensorProto

    g = model.graph
    inits = {t.name: t for t in g.initializer}
    for vi in list(g.input) + list(g.output):
        d0 = vi.type.tensor_type.shape.dim[0]
        d0.ClearField("dim_value")
        d0.dim_param = "N"
    del g.value_info[:]  # stale static shapes
    users = {}
    for n in g.node:
        for x in n.input:
            users[x] = users.get(x, 0) + 1
    for n in g.node:
        if n.op_type == "Reshape" and n.input[1] in inits:
            shape = numpy_helper.to_array(inits[n.input[1]]).copy()
            if shape.size and shape[0] == 1:
                shape[0] = -1 if -1 not in shape[1:] else 0
                target = n.input[1]
                if users[target] > 1:  # tf2onnx shares equal constants (e.g. with a Slice's ends): copy
                    target = n.input[1] = target + "_reshape"
                    g.initializer.append(numpy_helper.from_array(shape.astype(np.int64), target))
                else:
                    inits[target].CopyFrom(numpy_helper.from_array(shape.astype(np.int64), target))
        elif n.op_type == "Slice" and len(n.input) >= 4 and all(x in inits for x in n.input[1:4]):
            # TFLite's static "whole tensor" strided slice ends at 1 on the batch axis: keep every item
            starts, ends, axes = (numpy_helper.to_array(inits[x]) for x in n.input[1:4])
            batch = [i for i, axis in enumerate(axes) if axis == 0]
            if batch and starts[batch[0]] == 0 and ends[batch[0]] == 1:
                ends = ends.astype(np.int64).copy()
                ends[batch[0]] = np.iinfo(np.int64).max
                n.input[2] = n.input[2] + "_all_batch"
                g.initializer.append(numpy_helper.from_array(ends, n.input[2]))
    if flatten_outputs:
        for vi in g.output:
            name = vi.name
            producer = next(n for n in g.node if name in n.output)
            raw = name + "_4d"
            producer.output[list(producer.output).index(name)] = raw
            shape_name = name + "_flat_shape"
            g.initializer.append(numpy_helper.from_array(np.array([0, -1], dtype=np.int64), shape_name))
            g.node.append(helper.make_node("Reshape", [raw, shape_name], [name]))
            last = vi.type.tensor_type.shape.dim[-1].dim_value
            vi.type.CopyFrom(helper.make_tensor_type_proto(TensorProto.FLOAT, ["N", last]))


def rewrite_prelu(model, mode: str):
    """Express PRelu(x, a) with ops onnxruntime handles in its blocked (NCHWc) layout.

    relu-min: Relu(x) + a * Min(x, 0)
    relu-neg: Relu(x) - a * Relu(-x)
    max-mul : Max(x, a * x)          (exact only when 0 <= a <= 1; checked)
    All are exact in fp32 for finite x. See README.md, "Speed".
    """
    import numpy as np
    from onnx import helper, numpy_helper

    g = model.graph
    inits = {t.name: t for t in g.initializer}
    new_nodes = []
    extra_inits = {}
    for n in g.node:
        if n.op_type != "PRelu":
            new_nodes.append(n)
            continue
        x, a = n.input
        y = n.output[0]
        if mode == "relu-min":
            extra_inits["prelu_zero"] = np.array(0, dtype=np.float32)
            new_nodes += [
                helper.make_node("Relu", [x], [y + "_pos"]),
                helper.make_node("Min", [x, "prelu_zero"], [y + "_negx"]),
                helper.make_node("Mul", [y + "_negx", a], [y + "_neg"]),
                helper.make_node("Add", [y + "_pos", y + "_neg"], [y]),
            ]
        elif mode == "relu-neg":
            new_nodes += [
                helper.make_node("Relu", [x], [y + "_pos"]),
                helper.make_node("Neg", [x], [y + "_mx"]),
                helper.make_node("Relu", [y + "_mx"], [y + "_rmx"]),
                helper.make_node("Mul", [y + "_rmx", a], [y + "_neg"]),
                helper.make_node("Sub", [y + "_pos", y + "_neg"], [y]),
            ]
        elif mode in ("dwconv", "dwconv-neg"):
            alpha = numpy_helper.to_array(inits[a]).astype(np.float32)  # shape (1, C, 1, 1)
            C = alpha.size
            al = alpha.reshape(C, 1, 1, 1)
            conv = lambda i, w, o: helper.make_node(  # noqa: E731  depthwise 1x1 conv
                "Conv", [i, w], [o], group=C, kernel_shape=[1, 1])
            if mode == "dwconv":
                # y = a*x + (1-a)*Relu(x)
                extra_inits[y + "_wa"] = al
                extra_inits[y + "_w1ma"] = (1.0 - al).astype(np.float32)
                new_nodes += [
                    helper.make_node("Relu", [x], [y + "_pos"]),
                    conv(x, y + "_wa", y + "_ax"),
                    conv(y + "_pos", y + "_w1ma", y + "_bpos"),
                    helper.make_node("Add", [y + "_bpos", y + "_ax"], [y]),
                ]
            else:
                # y = Relu(x) + (-a) * Relu(-x)
                extra_inits[y + "_wm1"] = np.full((C, 1, 1, 1), -1.0, np.float32)
                extra_inits[y + "_wma"] = -al
                new_nodes += [
                    helper.make_node("Relu", [x], [y + "_pos"]),
                    conv(x, y + "_wm1", y + "_mx"),
                    helper.make_node("Relu", [y + "_mx"], [y + "_rmx"]),
                    conv(y + "_rmx", y + "_wma", y + "_neg"),
                    helper.make_node("Add", [y + "_neg", y + "_pos"], [y]),
                ]
        elif mode == "max-mul":
            alpha = numpy_helper.to_array(inits[a])
            if not (alpha.min() >= 0 and alpha.max() <= 1):
                raise SystemExit(f"max-mul PRelu rewrite invalid: alpha in [{alpha.min()}, {alpha.max()}]")
            new_nodes += [
                helper.make_node("Mul", [x, a], [y + "_ax"]),
                helper.make_node("Max", [x, y + "_ax"], [y]),
            ]
        else:
            raise ValueError(mode)
    del g.node[:]
    g.node.extend(new_nodes)
    for name, arr in extra_inits.items():
        g.initializer.append(numpy_helper.from_array(arr, name))


class _Subgraph:
    """Builds a run of standard ONNX nodes (plus constants) that replaces one custom node."""

    def __init__(self, prefix: str):
        self.prefix, self.nodes, self.initializers, self.count = prefix, [], [], 0

    def _name(self, hint: str) -> str:
        self.count += 1
        return f"{self.prefix}/{hint}_{self.count}"

    def const(self, value, dtype=None) -> str:
        import numpy as np
        from onnx import numpy_helper
        name = self._name("const")
        self.initializers.append(numpy_helper.from_array(np.asarray(value, dtype or np.float32), name))
        return name

    def op(self, op_type: str, inputs, out: str | None = None, **attrs) -> str:
        from onnx import helper
        out = out or self._name(op_type.lower())
        self.nodes.append(helper.make_node(op_type, list(inputs), [out], **attrs))
        return out

    def slice(self, x: str, starts, ends, axes) -> str:
        import numpy as np
        return self.op("Slice", [x, self.const(starts, np.int64), self.const(ends, np.int64),
                                 self.const(axes, np.int64)])


def _affine_names(matrix: str) -> tuple[str, str]:
    """The two tensors that stand for a Landmarks2TransformMatrix output (N, 4, 4): its 2x2 linear part
    transposed, (N, 2, 2), and its translation, (N, 1, 2), so that a row of points p maps to p @ L + t."""
    return f"{matrix}/linear_t", f"{matrix}/shift"


def _landmarks_to_transform_matrix(b: _Subgraph, landmarks: str, out: str, attrs: dict) -> None:
    """MediaPipe's Landmarks2TransformMatrix v2: (N, 468, 3) landmarks -> the affine map from a region
    crop's pixel (x, y) to the landmarks' frame, as the two tensors of `_affine_names(out)` (the 4x4
    matrix's other entries are constant and its only readers are the two re-expressions below).
    The crop is turned by r = target - angle(left->right) and spans the turned bounding box of the subset
    points, scaled by scale_x/y. No atan2 in ONNX: (cos r, sin r) = unit(right - left) @ [[ct, st], [st, -ct]].
    Written with packed (.., 2) rows and small MatMuls: onnxruntime's cost here is per node, not per value."""
    import numpy as np
    points = b.slice(landmarks, [0], [2], [2])                                      # (N, 468, 2)
    ends = b.op("Gather", [points, b.const([attrs["left_rotation_idx"], attrs["right_rotation_idx"]],
                                           np.int64)], axis=1)                      # (N, 2, 2)
    delta = b.op("MatMul", [b.const([[-1.0, 1.0]]), ends])                           # right - left, (N, 1, 2)
    length = b.op("Sqrt", [b.op("ReduceSum", [b.op("Mul", [delta, delta]), b.const([-1], np.int64)],
                                keepdims=1)])
    unit = b.op("Div", [delta, length])                                             # (cos a, sin a)
    target = float(attrs["target_rotation_radians"])
    ct, st = np.cos(target), np.sin(target)
    cs = b.op("MatMul", [unit, b.const([[ct, st], [st, -ct]])])                    # (c, s) = (cos r, sin r)
    # turn = [[c, s], [-s, c]]: a row p @ turn is p turned by -r; its transpose turns back by r
    turn = b.op("Reshape", [b.op("MatMul", [cs, b.const([[1.0, 0.0, 0.0, 1.0], [0.0, 1.0, -1.0, 0.0]])]),
                            b.const([-1, 2, 2], np.int64)])
    turn_back = b.op("Transpose", [turn], perm=[0, 2, 1])
    subset = b.op("Gather", [points, b.const(np.asarray(attrs["subset_idxs"]), np.int64)], axis=1)
    turned = b.op("MatMul", [subset, turn])                                         # (N, K, 2)
    lo = b.op("ReduceMin", [turned], axes=[1], keepdims=1)                         # (N, 1, 2)
    hi = b.op("ReduceMax", [turned], axes=[1], keepdims=1)
    centre = b.op("MatMul", [b.op("Mul", [b.op("Add", [lo, hi]), b.const(0.5)]), turn_back])
    width, height = float(attrs["output_width"]), float(attrs["output_height"])
    scale = b.op("Mul", [b.op("Sub", [hi, lo]), b.const([[attrs["scale_x"] / width, attrs["scale_y"] / height]])])
    # L = (R(r) diag(scale))^T = diag(scale) turn_back: row i of turn_back times scale_i
    linear_t, shift = _affine_names(out)
    b.op("Mul", [turn_back, b.op("Reshape", [scale, b.const([-1, 2, 1], np.int64)])], out=linear_t)
    b.op("Sub", [centre, b.op("MatMul", [b.const([[width / 2, height / 2]]), linear_t])], out=shift)


def _affine_of(b: _Subgraph, matrix: str, matrices: set, producer: dict, graph) -> tuple[str, str]:
    """The (A^T, t) pair for a custom op's matrix input: a Landmarks2TransformMatrix output, or (as tf2onnx
    leaves for the region landmarks) that output times a constant, folded into the pair here."""
    import numpy as np
    from onnx import numpy_helper
    if matrix in matrices:
        return _affine_names(matrix)
    node = producer.get(matrix)
    inits = {t.name: t for t in graph.initializer}
    if node is not None and node.op_type == "Mul" and len(node.input) == 2:
        source, constant = node.input if node.input[0] in matrices else reversed(node.input)
        if source in matrices and constant in inits:
            k = numpy_helper.to_array(inits[constant]).astype(np.float32)
            k = np.broadcast_to(k.reshape(k.shape[-2:]) if k.ndim > 2 and k.size == 16 else k, (4, 4))
            parts = zip(_affine_names(source), (k[:2, :2].T, k[:2, 3][None]))   # the factors of A^T and t
            return tuple(name if np.all(factor == 1.0) else b.op("Mul", [name, b.const(factor)])
                         for name, factor in parts)
    raise SystemExit(f"{matrix}: not a Landmarks2TransformMatrix output (or one times a constant)")


def _transform_landmarks(b: _Subgraph, points: str, affine: tuple[str, str], out: str) -> None:
    """MediaPipe's TransformLandmarks v2 for 2D points: (N, K, 2) -> A p + t, affine = (A^T, t)."""
    linear_t, shift = affine
    b.op("Add", [b.op("MatMul", [points, linear_t]), shift], out=out)


def _transform_tensor_bilinear(b: _Subgraph, features_nchw: str, shape: tuple[int, int, int],
                               affine: tuple[str, str], out: str, attrs: dict) -> None:
    """MediaPipe's TransformTensorBilinear v2: sample the (N, C, H, W) feature map at matrix (x + 0.5,
    y + 0.5) - 0.5 for each output pixel (x, y), bilinearly, zero where that point lies outside
    [0, W-1] x [0, H-1]; output NHWC like the TFLite op. The four neighbours of every sample (corners in
    the order (x0, y0), (x1, y0), (x0, y1), (x1, y1)) are gathered at once from the flattened map, their
    indices clamped into it (a clamped one has weight 0, or the point is outside and masked): onnxruntime
    runs this ~5x faster than GridSample for these 16x16 samples."""
    import numpy as np
    from onnx import TensorProto
    height, width = int(attrs["output_height"]), int(attrs["output_width"])
    channels, in_h, in_w = shape
    points = height * width
    gy, gx = np.mgrid[0:height, 0:width].astype(np.float32)
    centres = np.stack([gx + 0.5, gy + 0.5], -1).reshape(1, points, 2)
    linear_t, shift = affine
    coords = b.op("Sub", [b.op("Add", [b.op("MatMul", [b.const(centres), linear_t]), shift]), b.const(0.5)])
    limit = b.const([in_w - 1, in_h - 1])
    inside = b.op("And", [b.op("GreaterOrEqual", [coords, b.const(0.0)]), b.op("LessOrEqual", [coords, limit])])
    inside = b.op("ReduceMin", [b.op("Cast", [inside], to=TensorProto.FLOAT)], axes=[2], keepdims=1)  # (N, P, 1)
    low = b.op("Floor", [coords])
    frac = b.op("Unsqueeze", [b.op("Sub", [coords, low]), b.const([2], np.int64)])   # (N, P, 1, 2)
    offsets = np.array([[0, 0], [1, 0], [0, 1], [1, 1]], np.float32)               # the four corners
    corners = b.op("Add", [b.op("Unsqueeze", [low, b.const([2], np.int64)]), b.const(offsets)])  # (N, P, 4, 2)
    corners = b.op("Min", [b.op("Max", [corners, b.const(0.0)]), limit])           # clamped into the map
    index = b.op("MatMul", [corners, b.const([[1.0], [float(in_w)]])])             # x + W y, exact in fp32
    index = b.op("Reshape", [b.op("Cast", [index], to=TensorProto.INT64), b.const([0, 1, -1], np.int64)])
    index = b.op("Expand", [index, b.const([1, channels, 1], np.int64)])           # (N, C, 4P)
    # weight per axis: 1 - frac for the low corner, frac for the high one
    weight = b.op("Add", [b.op("Mul", [frac, b.const(2.0 * offsets - 1.0)]), b.const(1.0 - offsets)])
    weight = b.op("Mul", [b.op("ReduceProd", [weight], axes=[3], keepdims=0), inside])   # (N, P, 4)
    weight = b.op("Reshape", [weight, b.const([0, 1, -1], np.int64)])              # (N, 1, 4P)
    flat = b.op("Reshape", [features_nchw, b.const([0, channels, in_h * in_w], np.int64)])
    weighted = b.op("Mul", [b.op("GatherElements", [flat, index], axis=2), weight])  # (N, C, 4P)
    summed = b.op("ReduceSum", [b.op("Reshape", [weighted, b.const([0, 0, points, 4], np.int64)]),
                                b.const([3], np.int64)], keepdims=0)                 # (N, C, P)
    grid = b.op("Reshape", [summed, b.const([0, 0, height, width], np.int64)])
    b.op("Transpose", [grid], out=out, perm=[0, 2, 3, 1])


def replace_mediapipe_custom_ops(model) -> dict:
    """Replace the TFL_Landmarks2TransformMatrix / TFL_TransformTensorBilinear / TFL_TransformLandmarks nodes
    tf2onnx leaves behind by standard ONNX subgraphs; drop nodes left unused. Returns {region: mesh indices}
    from the Landmarks2TransformMatrix options (for the model's metadata)."""
    from onnx import helper, shape_inference
    g = model.graph
    producer = {o: n for n in g.node for o in n.output}
    shapes = {vi.name: [d.dim_value for d in vi.type.tensor_type.shape.dim]   # the custom ops' inputs are
              for vi in shape_inference.infer_shapes(model).graph.value_info}  # upstream: inferable
    nodes, initializers, regions, matrices = [], [], {}, set()
    for n in g.node:
        if not n.op_type.startswith("TFL_"):
            nodes.append(n)
            continue
        attrs = {a.name: helper.get_attribute_value(a) for a in n.attribute}
        b = _Subgraph(n.output[0])
        if n.op_type == "TFL_Landmarks2TransformMatrix":
            _landmarks_to_transform_matrix(b, n.input[0], n.output[0], attrs)
            matrices.add(n.output[0])
            key = (attrs["left_rotation_idx"], attrs["right_rotation_idx"])
            regions[REGION_BY_ROTATION_POINTS[key]] = [int(i) for i in attrs["subset_idxs"]]
        elif n.op_type == "TFL_TransformLandmarks":
            _transform_landmarks(b, n.input[0], _affine_of(b, n.input[1], matrices, producer, g), n.output[0])
        elif n.op_type == "TFL_TransformTensorBilinear":
            # tf2onnx fed the op an NHWC transpose of an NCHW feature map: sample the NCHW one directly
            to_nhwc = producer[n.input[0]]
            if to_nhwc.op_type != "Transpose" or list(to_nhwc.attribute[0].ints) != [0, 2, 3, 1]:
                raise SystemExit(f"unexpected input of {n.output[0]}: {to_nhwc.op_type}")
            shape = tuple(shapes[to_nhwc.input[0]][1:4])
            if len(shape) != 3 or not all(shape):
                raise SystemExit(f"unknown feature map shape for {n.output[0]}: {shape}")
            _transform_tensor_bilinear(b, to_nhwc.input[0], shape, _affine_of(b, n.input[1], matrices, producer, g),
                                       n.output[0], attrs)
        else:
            raise SystemExit(f"unknown MediaPipe custom op {n.op_type}")
        nodes += b.nodes
        initializers += b.initializers
    # drop what only fed the replaced nodes (the NHWC transposes)
    needed = {vi.name for vi in g.output}
    kept = []
    for n in reversed(nodes):
        if any(o in needed for o in n.output):
            kept.append(n)
            needed.update(n.input)
    del g.node[:]
    g.node.extend(reversed(kept))
    g.initializer.extend(initializers)
    if sorted(regions) != sorted(REGION_BY_ROTATION_POINTS.values()):
        raise SystemExit(f"expected the lips and both eye regions, found {sorted(regions)}")
    return regions


def canonicalize(model):
    """Deterministic graph: topological order, tensor/node names, initializer order, no metadata."""
    import onnx
    from onnx import helper

    g = model.graph
    inits = {t.name: t for t in g.initializer}
    graph_inputs = [vi.name for vi in g.input]
    graph_outputs = [vi.name for vi in g.output]
    keep_names = set(graph_inputs) | set(graph_outputs)

    # Deterministic topological sort (Kahn); ties broken by the canonical names
    # of the node's inputs, which only depend on earlier decisions.
    nodes = list(g.node)
    consumers = {}
    for idx, n in enumerate(nodes):
        for x in n.input:
            consumers.setdefault(x, []).append(idx)
    ready_tensors = set(graph_inputs) | set(inits) | {""}
    pending = {idx: sum(1 for x in n.input if x not in ready_tensors) for idx, n in enumerate(nodes)}

    rename = {x: x for x in graph_inputs}
    init_counter = [0]
    tensor_counter = [0]

    def canon_input(x):
        if x in rename:
            return rename[x]
        if x in inits:  # name constants in first-use order
            rename[x] = f"const_{init_counter[0]:04d}"
            init_counter[0] += 1
            return rename[x]
        return x

    init_hash = {name: "~" + hashlib.sha1(t.SerializeToString(deterministic=True).replace(
        name.encode(), b"")).hexdigest() for name, t in inits.items()}

    def key(idx):
        n = nodes[idx]
        ins = []
        for x in n.input:
            if x in inits:
                ins.append(init_hash[x])
            else:
                ins.append(rename.get(x, x))
        return (n.op_type, tuple(ins))

    ready = sorted([idx for idx, c in pending.items() if c == 0], key=key)
    order = []
    while ready:
        idx = ready.pop(0)
        order.append(idx)
        n = nodes[idx]
        for x in n.input:
            canon_input(x)
        for o in n.output:
            if o in keep_names or o == "":
                rename[o] = o
            else:
                rename[o] = f"t{tensor_counter[0]:04d}"
                tensor_counter[0] += 1
        newly = []
        for o in n.output:
            for c in consumers.get(o, []):
                pending[c] -= 1
                if pending[c] == 0:
                    newly.append(c)
        ready = sorted(ready + newly, key=key)
    assert len(order) == len(nodes), "graph is not a DAG / has unresolved inputs"

    new_nodes = []
    for i, idx in enumerate(order):
        n = nodes[idx]
        m = helper.make_node(n.op_type, [rename.get(x, x) for x in n.input],
                             [rename.get(o, o) for o in n.output],
                             name=f"{n.op_type}_{i:04d}", domain=n.domain or None)
        attrs = sorted(n.attribute, key=lambda a: a.name)
        for a in attrs:
            a.ClearField("doc_string")
        m.attribute.extend(attrs)
        new_nodes.append(m)

    used_inits = sorted((rename[name], t) for name, t in inits.items() if name in rename)
    new_inits = []
    for new_name, t in used_inits:
        t2 = onnx.TensorProto()
        t2.CopyFrom(t)
        t2.name = new_name
        t2.ClearField("doc_string")
        new_inits.append(t2)

    del g.node[:]
    g.node.extend(new_nodes)
    del g.initializer[:]
    g.initializer.extend(new_inits)
    del g.value_info[:]
    for vi in list(g.input) + list(g.output):
        vi.ClearField("doc_string")
    g.name = "graph"
    g.ClearField("doc_string")
    model.ClearField("producer_name")
    model.ClearField("producer_version")
    model.ClearField("domain")
    model.ClearField("model_version")
    model.ClearField("doc_string")
    del model.metadata_props[:]
    # Keep only the opset imports actually needed.
    domains = {n.domain or "" for n in g.node}
    keep = [op for op in model.opset_import if (op.domain or "") in domains or (op.domain or "") == ""]
    del model.opset_import[:]
    model.opset_import.extend(sorted(keep, key=lambda o: o.domain))
    return model


def fp16_consts_to_fp32(model):
    """tf2onnx keeps TFLite's fp16 weights + Cast nodes; fold Cast(fp16 const) -> fp32 const."""
    import numpy as np
    from onnx import numpy_helper, TensorProto

    g = model.graph
    inits = {t.name: t for t in g.initializer}
    consumers = {}
    for n in g.node:
        for x in n.input:
            consumers.setdefault(x, []).append(n)
    folded = 0
    keep_nodes = []
    for n in g.node:
        to = next((a.i for a in n.attribute if a.name == "to"), None)
        if (n.op_type == "Cast" and n.input[0] in inits and to == TensorProto.FLOAT
                and inits[n.input[0]].data_type == TensorProto.FLOAT16):
            arr = numpy_helper.to_array(inits[n.input[0]]).astype(np.float32)
            g.initializer.append(numpy_helper.from_array(arr, n.output[0]))
            folded += 1
            continue
        keep_nodes.append(n)
    del g.node[:]
    g.node.extend(keep_nodes)
    # drop now-unused initializers
    used = {x for n in g.node for x in n.input}
    remaining = [t for t in g.initializer if t.name in used]
    del g.initializer[:]
    g.initializer.extend(remaining)
    return folded


def convert_one(name, spec, tflite_path: Path, workdir: Path, prelu: str):
    import onnx
    src = tflite_path
    if name == "face_detection_full_range":
        dense = workdir / "face_detection_full_range_dense.tflite"
        n = densify_tflite(tflite_path, dense)
        print(f"[densify] {name}: removed {n} DENSIFY ops")
        src = dense
    if spec.get("mediapipe_custom_ops"):
        print(f"[convert] {name}: tf2onnx reports MediaPipe's custom ops as unsupported below; they are kept as "
              "TFL_* nodes and replaced by standard ONNX ops")
    model = tflite_to_onnx(src)
    regions = replace_mediapipe_custom_ops(model) if spec.get("mediapipe_custom_ops") else None
    rename_io(model, spec["inputs"], spec["outputs"])
    folded = fp16_consts_to_fp32(model)
    if spec.get("dynamic_batch"):
        make_dynamic_batch(model, flatten_outputs=spec.get("flatten_outputs", False))
    if prelu != "keep":
        rewrite_prelu(model, prelu)
    canonicalize(model)
    if regions:
        onnx.helper.set_model_props(model, {REFINEMENT_METADATA_KEY: json.dumps(regions, sort_keys=True)})
    onnx.checker.check_model(model, full_check=True)
    out = MODELS_DIR / spec["onnx"]
    out.write_bytes(model.SerializeToString(deterministic=True))
    print(f"[onnx] {out.name}: {len(model.graph.node)} nodes, folded {folded} fp16 casts, "
          f"{out.stat().st_size} B")
    return out


def read_manifest(path: Path) -> dict:
    if not path.exists():
        return {}
    out = {}
    for line in path.read_text().splitlines():
        if line.strip():
            h, fn = line.split(None, 1)
            out[fn.strip().lstrip("*")] = h
    return out


def build(args):
    only = set(args.only.split(",")) if args.only else None
    unknown = (only or set()) - set(MODELS)
    if unknown:
        raise SystemExit(f"--only: unknown model(s) {', '.join(sorted(unknown))}; choose from {', '.join(MODELS)}")
    workdir = Path(tempfile.mkdtemp(prefix="face3d-models-"))
    try:
        old_manifest = read_manifest(MODELS_DIR / "MANIFEST.sha256")
        wheel = Path(args.wheel) if args.wheel else fetch_wheel(workdir)
        print(f"[wheel] {wheel.name} sha256 {sha256(wheel)}")
        tflites = extract_tflite(wheel, workdir)
        shipped = []
        for name, spec in MODELS.items():
            if only and name not in only:
                # kept as it is: the manifest must not take a changed (corrupt) file's hash as the truth
                kept = MODELS_DIR / spec["onnx"]
                if not kept.is_file() or old_manifest.get(kept.name) != sha256(kept):
                    raise SystemExit(f"{kept.name} does not match MANIFEST.sha256: rebuild it too "
                                     f"(--only {','.join(sorted(only | {name}))}) or drop --only")
                shipped.append(kept)
                continue
            shipped.append(convert_one(name, spec, tflites[name], workdir,
                                       prelu=args.prelu))
        for dst, srcname in GEOMETRY_FILES.items():
            src = DATA_GEOMETRY / srcname
            if not src.exists():
                raise SystemExit(f"missing {src} (set FACE3D_GEOMETRY_DIR)")
            shutil.copyfile(src, MODELS_DIR / dst)
            shipped.append(MODELS_DIR / dst)
        (MODELS_DIR / "NOTICE").write_text(NOTICE_TEXT)
        shipped.append(MODELS_DIR / "NOTICE")

        lines = [f"{sha256(p)}  {p.name}" for p in sorted(shipped, key=lambda p: p.name)]
        new_manifest = {l.split("  ", 1)[1]: l.split("  ", 1)[0] for l in lines}
        (MODELS_DIR / "MANIFEST.sha256").write_text("\n".join(lines) + "\n")
        print("[manifest] wrote MANIFEST.sha256")
        if old_manifest:
            same = [f for f in new_manifest if old_manifest.get(f) == new_manifest[f]]
            diff = [f for f in new_manifest if old_manifest.get(f) != new_manifest[f]]
            print(f"[reproducible] {len(same)}/{len(new_manifest)} files byte-identical to the previous manifest")
            for f in diff:
                print(f"[reproducible]   DIFFERS: {f} (old {old_manifest.get(f, 'absent')[:16]}, "
                      f"new {new_manifest[f][:16]}) -> rely on python models/check_models.py")
        else:
            print("[reproducible] no previous MANIFEST.sha256 to compare with")
    finally:
        if not args.keep_workdir:
            shutil.rmtree(workdir, ignore_errors=True)
        else:
            print(f"[workdir] kept {workdir}")


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--venv", default=str(DEFAULT_VENV), help="build venv location (default %(default)s)")
    ap.add_argument("--reuse-venv", action="store_true", help="reuse the venv if it exists (skip pip install)")
    ap.add_argument("--wheel", help="use this mediapipe-0.10.21 wheel instead of pip download")
    ap.add_argument("--only", help="comma-separated model names to rebuild (others kept)")
    ap.add_argument("--prelu", default="dwconv", choices=["keep", "relu-min", "max-mul", "relu-neg", "dwconv", "dwconv-neg"],
                    help="how to express PRelu in the ONNX graph (default %(default)s; see README)")
    ap.add_argument("--keep-workdir", action="store_true", help="keep the temporary work folder")
    ap.add_argument("--in-venv", action="store_true", help=argparse.SUPPRESS)
    args = ap.parse_args()

    if not args.in_venv:
        py = ensure_venv(Path(args.venv), args.reuse_venv)
        env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3", CUDA_VISIBLE_DEVICES="")
        cmd = [str(py), str(Path(__file__).resolve()), "--in-venv", *sys.argv[1:]]
        sys.exit(subprocess.call(cmd, env=env))
    if not in_build_env():
        raise SystemExit("build environment incomplete (tensorflow/tf2onnx/mediapipe missing)")
    build(args)


if __name__ == "__main__":
    main()
