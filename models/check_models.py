#!/usr/bin/env python3
"""Check the ONNX models in models/ against their TFLite originals on a real face.

Runs every ONNX model (onnxruntime) and the original TFLite model from the
mediapipe==0.10.21 wheel (TensorFlow's TFLite interpreter, both with the
default XNNPACK delegate and with the plain reference kernels) on
face3d_ros/data/astronaut.png (NASA, public domain):
  * detectors: the whole image resized to 128x128 / 192x192, scaled to [-1, 1];
  * face_landmark: a square crop around the face, 192x192, [0, 1];
  * iris_landmark: 64x64 crops around both eyes (placed with the landmarks), [0, 1];
  * face_landmark_with_attention (MediaPipe custom ops, which TFLite's interpreter lacks): the face crop
    through MediaPipe's own graph (its custom-op resolver and its 478-point decoding), compared with the
    478 points face3d_ros decodes from the ONNX outputs, and the face flag.
Prints the max abs difference per output and exits non-zero if any is >= 1e-3.
It also checks that batch=3 calls of the dynamic-batch models equal three
single calls, and with --bench prints CPU timings (median of 50 runs, 2 threads).

Needs the build venv (tensorflow + mediapipe); it re-executes itself in
/tmp/face3d-model-build (created with models/build_models.py if missing).

    python models/check_models.py [--bench] [--venv DIR]
"""
from __future__ import annotations

import argparse
import os
import subprocess
import sys
import time
from pathlib import Path

MODELS_DIR = Path(__file__).resolve().parent
ROOT = MODELS_DIR.parent
IMAGE_CANDIDATES = [ROOT / "face3d_ros" / "data" / "astronaut.png",
                    ROOT.parent / "shared" / "data" / "single_face" / "skimage_astronaut.png"]
TOL = 1e-3
BATCH_TOL = 1e-5

sys.path.insert(0, str(MODELS_DIR))
import build_models  # noqa: E402  (MODELS, DEFAULT_VENV, ensure_venv)


def load_image():
    import cv2
    for p in IMAGE_CANDIDATES:
        if p.exists():
            bgr = cv2.imread(str(p), cv2.IMREAD_COLOR)
            return cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB), p
    raise SystemExit(f"no test image found in {IMAGE_CANDIDATES}")


def crop_resize(img, cx, cy, size, out, flip=False):
    """Square crop centred at (cx, cy) of side `size` px, resized to out x out (affine, border replicate)."""
    import cv2
    import numpy as np
    s = out / size
    M = np.array([[s, 0, out / 2 - s * cx], [0, s, out / 2 - s * cy]], dtype=np.float64)
    if flip:
        M = np.array([[-1, 0, out], [0, 1, 0]], dtype=np.float64) @ np.vstack([M, [0, 0, 1]])
    return cv2.warpAffine(img, M[:2], (out, out), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)


class TFLite:
    def __init__(self, path, xnnpack=True, threads=2):
        import tensorflow as tf
        kw = {}
        if not xnnpack:
            kw["experimental_op_resolver_type"] = \
                tf.lite.experimental.OpResolverType.BUILTIN_WITHOUT_DEFAULT_DELEGATES
        self.it = tf.lite.Interpreter(model_path=str(path), num_threads=threads, **kw)
        self.it.allocate_tensors()
        self.inp = self.it.get_input_details()[0]["index"]
        self.outs = [d["index"] for d in self.it.get_output_details()]

    def __call__(self, x):
        self.it.set_tensor(self.inp, x)
        self.it.invoke()
        return [self.it.get_tensor(i).copy() for i in self.outs]


def ort_session(path, threads=2):
    import onnxruntime as ort
    so = ort.SessionOptions()
    so.intra_op_num_threads = threads
    so.inter_op_num_threads = 1
    so.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    return ort.InferenceSession(str(path), so, providers=["CPUExecutionProvider"])


def median_ms(fn, n=50, warmup=10):
    import numpy as np
    for _ in range(warmup):
        fn()
    ts = []
    for _ in range(n):
        t0 = time.perf_counter()
        fn()
        ts.append((time.perf_counter() - t0) * 1e3)
    return float(np.median(ts))


def sigmoid(x):
    import numpy as np
    return 1.0 / (1.0 + np.exp(-np.clip(x, -80, 80)))


# The face crop of the astronaut run through MediaPipe's own inference (TFLite with MediaPipe's custom ops) and
# its own 478-point decoding (TensorsToFaceLandmarksWithAttention, i.e. LandmarksRefinementCalculator).
ATTENTION_GRAPH = """
input_stream: "image"
output_stream: "refined"
output_stream: "flag"
node { calculator: "ImageToTensorCalculator" input_stream: "IMAGE:image" output_stream: "TENSORS:input"
  options { [mediapipe.ImageToTensorCalculatorOptions.ext] { output_tensor_width: 192 output_tensor_height: 192
    keep_aspect_ratio: false output_tensor_float_range { min: 0.0 max: 1.0 } } } }
node { calculator: "TfLiteCustomOpResolverCalculator" output_side_packet: "OP_RESOLVER:op_resolver" }
node { calculator: "TfLiteModelCalculator" input_side_packet: "MODEL_BLOB:model_blob"
  output_side_packet: "MODEL:model" }
node { calculator: "InferenceCalculator" input_stream: "TENSORS:input" output_stream: "TENSORS:raw"
  input_side_packet: "MODEL:model" input_side_packet: "OP_RESOLVER:op_resolver"
  options { [mediapipe.InferenceCalculatorOptions.ext] { delegate { tflite {} } } } }
node { calculator: "SplitTensorVectorCalculator" input_stream: "raw" output_stream: "landmark_tensors"
  output_stream: "flag_tensor"
  options { [mediapipe.SplitVectorCalculatorOptions.ext] { ranges { begin: 0 end: 6 } ranges { begin: 6 end: 7 } } } }
node { calculator: "TensorsToFaceLandmarksWithAttention" input_stream: "TENSORS:landmark_tensors"
  output_stream: "LANDMARKS:refined" }
node { calculator: "TensorsToFloatsCalculator" input_stream: "TENSORS:flag_tensor" output_stream: "FLOAT:flag" }
"""


def check_attention_model(sess, tflite_path: Path, img, spec) -> tuple[list, list]:
    """face_landmark_with_attention.onnx against MediaPipe's graph on the 192x192 face crop: the 478 points
    face3d_ros decodes from the ONNX outputs (face3d_ros.core.landmarks.MeshRefinement with the regions in the
    model's metadata) against MediaPipe's refined landmarks (which use every landmark output), and the
    face flag. This checks the custom-op rewrite, the region indices and the decoding in one go."""
    import json
    import mediapipe as mp
    import numpy as np
    from google.protobuf import text_format
    from mediapipe.framework import calculator_pb2
    from mediapipe.python import packet_creator, packet_getter
    from mediapipe.python._framework_bindings import calculator_graph
    sys.path.insert(0, str(ROOT))
    from face3d_ros.core.landmarks import REFINEMENT_METADATA_KEY, MeshRefinement

    crop = np.ascontiguousarray(crop_resize(img, 225, 118, 190, 192))             # uint8 RGB, as the others
    graph = calculator_graph.CalculatorGraph(
        graph_config=text_format.Parse(ATTENTION_GRAPH, calculator_pb2.CalculatorGraphConfig()))
    got = {}
    graph.observe_output_stream("refined", lambda _, p: got.__setitem__("refined", packet_getter.get_proto(p)))
    graph.observe_output_stream("flag", lambda _, p: got.__setitem__("flag", packet_getter.get_float(p)))
    graph.start_run({"model_blob": packet_creator.create_string(tflite_path.read_bytes())})
    graph.add_packet_to_input_stream(
        "image", packet_creator.create_image_frame(image_format=mp.ImageFormat.SRGB, data=crop).at(0))
    graph.close()
    x = (crop.astype(np.float32) / 255.0)[None]
    outputs = dict(zip(spec["outputs"], sess.run(None, {spec["inputs"][0]: x})))
    regions = {k: np.asarray(v) for k, v in json.loads(
        sess.get_modelmeta().custom_metadata_map[REFINEMENT_METADATA_KEY]).items()}
    ours = MeshRefinement(regions)({k: v[0] for k, v in outputs.items()})
    theirs = np.array([[p.x, p.y, p.z] for p in got["refined"].landmark]) * 192.0   # normalised -> crop px
    rows, failures = [], []
    for label, d in (("478 x,y", float(np.max(np.abs(ours[:, :2] - theirs[:, :2])))),
                     ("478 z", float(np.max(np.abs(ours[:, 2] - theirs[:, 2])))),
                     ("face_flag", abs(float(outputs["face_flag"].reshape(-1)[0]) - got["flag"]))):
        rows.append(("face_landmark_with_attention", label, "mediapipe graph", d))
        if not d < TOL:
            failures.append(f"face_landmark_with_attention {label} vs MediaPipe's graph: {d:.3g}")
    print(f"  face_landmark_with_attention: face presence {sigmoid(got['flag']):.4f}")
    return rows, failures


def run_checks(bench: bool) -> int:
    import numpy as np
    import mediapipe
    assert mediapipe.__version__ == "0.10.21", mediapipe.__version__
    mp_root = Path(mediapipe.__file__).resolve().parent.parent
    img, img_path = load_image()
    h, w = img.shape[:2]
    print(f"image: {img_path} ({w}x{h})")

    # ---- inputs -------------------------------------------------------
    import cv2
    f = lambda a: a.astype(np.float32)  # noqa: E731
    inputs = {}
    for name, size in (("face_detection_short_range", 128), ("face_detection_full_range", 192)):
        inputs[name] = f(cv2.resize(img, (size, size), interpolation=cv2.INTER_AREA))[None] / 127.5 - 1.0
    # face box of the astronaut: centre (225, 118), side ~190 px
    face = f(crop_resize(img, 225, 118, 190, 192))[None] / 255.0
    inputs["face_landmark"] = face

    failures = []
    results = {}
    rows = []
    for name, spec in build_models.MODELS.items():
        onnx_path = MODELS_DIR / spec["onnx"]
        tfl_path = mp_root / spec["wheel_path"]
        sess = ort_session(onnx_path)
        if spec.get("mediapipe_custom_ops"):
            # TFLite's interpreter lacks MediaPipe's custom ops: compare with MediaPipe's own graph instead
            inputs[name] = face
            attention_rows, attention_failures = check_attention_model(sess, tfl_path, img, spec)
            rows += attention_rows
            failures += attention_failures
        if name == "iris_landmark":
            # eye crops placed with the face_landmark output (ONNX), as the product would do
            lm = results["face_landmark"][0].reshape(468, 3)[:, :2]
            to_img = lambda p: np.array([225 - 95, 118 - 95]) + p * (190 / 192)  # noqa: E731
            eyes = []
            for (a, b), flip in (((33, 133), False), ((362, 263), True)):
                pa, pb = to_img(lm[a]), to_img(lm[b])
                c = (pa + pb) / 2
                side = 2.3 * np.linalg.norm(pb - pa)
                eyes.append(f(crop_resize(img, c[0], c[1], side, 64, flip=flip))[None] / 255.0)
            inputs[name] = eyes[0]
            extra_batch = eyes
        x = inputs[name]
        got = sess.run(None, {spec["inputs"][0]: x})
        results[name] = got
        for variant, xnn in () if spec.get("mediapipe_custom_ops") else (("tflite+xnnpack", True),
                                                                         ("tflite-reference", False)):
            ref = TFLite(tfl_path, xnnpack=xnn)(x)
            for oname, o, r in zip(spec["outputs"], got, ref):
                r = r.reshape(o.shape)
                d = float(np.max(np.abs(o - r)))
                rows.append((name, oname, variant, d))
                if not (d < TOL) or not np.all(np.isfinite(o)):
                    failures.append(f"{name}.{oname} vs {variant}: {d:.3g}")

        # sanity: the face is found / present
        if name.startswith("face_detection"):
            print(f"  {name}: max face score {sigmoid(got[1]).max():.4f}")
        if name == "face_landmark":
            print(f"  {name}: face presence {sigmoid(got[1]).item():.4f}")

        if spec.get("dynamic_batch"):
            if name.startswith("face_landmark"):
                batch = [face, face[:, :, ::-1].copy(), f(crop_resize(img, 230, 112, 210, 192))[None] / 255.0]
            else:
                batch = extra_batch + [eyes[0][:, ::-1].copy()]
            xb = np.concatenate(batch, axis=0)
            out_b = sess.run(None, {spec["inputs"][0]: xb})
            singles = [sess.run(None, {spec["inputs"][0]: b}) for b in batch]
            for k, oname in enumerate(spec["outputs"]):
                stacked = np.concatenate([s[k] for s in singles], axis=0)
                d = float(np.max(np.abs(out_b[k] - stacked)))
                rows.append((name, oname, "batch3 vs 3 single", d))
                if not (d < BATCH_TOL) or out_b[k].shape[0] != 3:
                    failures.append(f"{name}.{oname} batch=3 vs single: {d:.3g}")

    print(f"\n{'model':<30}{'output':<13}{'reference':<22}max abs diff")
    for name, oname, variant, d in rows:
        print(f"{name:<30}{oname:<13}{variant:<22}{d:.3e}")

    if bench:
        import onnxruntime as ort
        rounds = 3
        print(f"\nCPU timings: median of 50 runs, 2 threads, best of {rounds} interleaved rounds "
              f"(onnxruntime {ort.__version__}, ORT_ENABLE_ALL)")
        runners = {}
        for name, spec in build_models.MODELS.items():
            sess = ort_session(MODELS_DIR / spec["onnx"])
            feed = {spec["inputs"][0]: inputs[name]}
            if spec.get("mediapipe_custom_ops"):   # TFLite's interpreter cannot run it
                runners[name] = (lambda s=sess, fd=feed: s.run(None, fd), lambda: None)
                continue
            tfl = TFLite(mp_root / spec["wheel_path"], xnnpack=True)
            runners[name] = (lambda s=sess, fd=feed: s.run(None, fd), lambda t=tfl, x=inputs[name]: t(x))
        best = {name: [float("inf"), float("inf")] for name in runners}
        for _ in range(rounds):
            for name, (r_ort, r_tfl) in runners.items():
                best[name][0] = min(best[name][0], median_ms(r_ort))
                best[name][1] = min(best[name][1], median_ms(r_tfl))
        for name, (t_ort, t_tfl) in best.items():
            tflite = "n/a (MediaPipe custom ops)" if build_models.MODELS[name].get("mediapipe_custom_ops") \
                else f"{t_tfl:6.3f} ms"
            print(f"  {name:<30} onnxruntime {t_ort:6.3f} ms   tflite+xnnpack {tflite}")

    if failures:
        print("\nFAILED:\n  " + "\n  ".join(failures))
        return 1
    print(f"\nOK: all outputs within {TOL} of TFLite; batch=3 equals single calls")
    return 0


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--bench", action="store_true", help="also time onnxruntime vs TFLite")
    ap.add_argument("--venv", default=str(build_models.DEFAULT_VENV))
    ap.add_argument("--in-venv", action="store_true", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if not args.in_venv:
        py = build_models.ensure_venv(Path(args.venv), reuse=True)
        env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3", CUDA_VISIBLE_DEVICES="")
        sys.exit(subprocess.call([str(py), str(Path(__file__).resolve()), "--in-venv", *sys.argv[1:]], env=env))
    sys.exit(run_checks(args.bench))


if __name__ == "__main__":
    main()
