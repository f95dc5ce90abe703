"""ONNX node conformance: the onnx wheel's own node test cases, regenerated (about 10 s) and run
through `tessera run` and through onnxruntime, each judged against the stored outputs with the
tolerances of onnx's backend test runner (rtol 1e-3, atol 1e-7; exact for integers and bools).

Usage: node_conformance.py --tessera BIN [--workdir DIR] [--sample N] [--list-failures]
                           [--write-passing FILE]
Prints, per runtime, how many of the tests it passes; the ops whose absence fails the most
tests, and the tests that fail for another reason. `--write-passing` writes the names of the
tests tessera passes: Tests/python/node_tests_passing.txt, which `make test` holds it to.
"""
import argparse
import collections
import glob
import os
import re
import subprocess
import sys
import tempfile

import numpy as np
import onnx
import onnxruntime as ort
from onnx import numpy_helper
from onnx.backend.test import cmd_tools
from onnx.backend.test.case import node


def generate(folder):
    np.random.seed(0)
    cmd_tools.model_test.collect_testcases = lambda: node.collect_testcases(None)   # node tests, not model tests
    cmd_tools.generate_data(argparse.Namespace(output=folder))
    return sorted(glob.glob(os.path.join(folder, "node", "*")))


def load_pb(path, kind="tensor_type"):
    """A test-data file as numpy: an array, a list of arrays (sequence), or None (empty optional)."""
    proto = {"tensor_type": onnx.TensorProto, "sequence_type": onnx.SequenceProto, "optional_type": onnx.OptionalProto}[kind]()
    with open(path, "rb") as f:
        proto.ParseFromString(f.read())
    if kind == "sequence_type":
        return numpy_helper.to_list(proto)
    if kind == "optional_type":
        return numpy_helper.to_optional(proto)
    return numpy_helper.to_array(proto)


def kind(value_info):
    return value_info.type.WhichOneof("value")


def from_npz(got, name):
    """An output as `tessera run` writes it: NAME, or NAME[0], NAME[1], ... for a sequence."""
    if name in got:
        return got[name]
    items = []
    while f"{name}[{len(items)}]" in got:
        items.append(got[f"{name}[{len(items)}]"])
    return items


def close(expected, got):
    if isinstance(expected, list) or expected is None:   # a sequence, or an empty optional (written as nothing)
        expected = expected or []
        return isinstance(got, list) and len(got) == len(expected) and all(close(e, g) for e, g in zip(expected, got))
    expected, got = np.asarray(expected), np.asarray(got)
    if expected.shape != got.shape:
        return False
    if expected.dtype.kind == "V":   # ml_dtypes' bfloat16, float8, float4, int4: numpy compares them in float32
        expected = expected.astype(np.float32)
        return np.allclose(got.astype(np.float32), expected, rtol=1e-3, atol=1e-7, equal_nan=True)
    if expected.dtype.kind in "fc":
        return np.allclose(got.astype(expected.dtype), expected, rtol=1e-3, atol=1e-7, equal_nan=True)
    return np.array_equal(got, expected)


def case_data(case):
    model = onnx.load(os.path.join(case, "model.onnx"))
    data = os.path.join(case, "test_data_set_0")
    inputs = sorted(glob.glob(os.path.join(data, "input_*.pb")), key=lambda p: int(p.rsplit("_", 1)[1][:-3]))
    outputs = sorted(glob.glob(os.path.join(data, "output_*.pb")), key=lambda p: int(p.rsplit("_", 1)[1][:-3]))
    return model, inputs, outputs


def run_tessera(binary, case, work):
    model, inputs, outputs = case_data(case)
    names = [i.name for i in model.graph.input]
    args = [binary, "run", os.path.join(case, "model.onnx"), "-o", os.path.join(work, "out.npz"), "--force", "--threads", "1"]
    for name, path in zip(names, inputs):
        args += ["--input", f"{name}={path}"]
    result = subprocess.run(args, capture_output=True, text=True, timeout=120)
    if result.returncode != 0:
        return False, result.stderr.strip().splitlines()[-1] if result.stderr.strip() else f"exit {result.returncode}"
    got = np.load(os.path.join(work, "out.npz"))
    for info, path in zip(model.graph.output, outputs):
        if not close(load_pb(path, kind(info)), from_npz(got, info.name)):
            return False, f"output '{info.name}' differs"
    return True, ""


def missing_ops(why):
    """The ops a refusal names ("the executor lacks 2 op(s) this model needs: A, B (3 nodes)")."""
    found = re.search(r"lacks \d+ op\(s\) this model needs: (.*)", why)
    return [re.sub(r" \(\d+ nodes\)$", "", op) for op in found.group(1).split(", ")] if found else []


def run_onnxruntime(case):
    try:
        model, inputs, outputs = case_data(case)
        session = ort.InferenceSession(os.path.join(case, "model.onnx"), providers=["CPUExecutionProvider"])
        feeds = {i.name: load_pb(p, kind(i)) for i, p in zip(model.graph.input, inputs)}
        got = session.run([o.name for o in model.graph.output], feeds)
        return all(close(load_pb(p, kind(o)), g) for o, p, g in zip(model.graph.output, outputs, got))
    except Exception:   # an op, type or opset it lacks, or inputs its Python API refuses
        return False


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--tessera", required=True)
    parser.add_argument("--workdir")
    parser.add_argument("--sample", type=int, help="every k-th test only (a fixed sample)")
    parser.add_argument("--list-failures", action="store_true")
    parser.add_argument("--write-passing", help="write the names of the tests tessera passes to this file")
    args = parser.parse_args()
    folder = args.workdir or tempfile.mkdtemp(prefix="node-conformance-")
    cases = generate(folder)
    if args.sample:
        cases = cases[::args.sample]
    passed = {"tessera": 0, "onnxruntime": 0}
    missing = collections.Counter()
    other = 0
    failures, passing = [], []
    for case in cases:
        ok, why = run_tessera(args.tessera, case, folder)
        passed["tessera"] += ok
        passed["onnxruntime"] += run_onnxruntime(case)
        if ok:
            passing.append(os.path.basename(case))
            continue
        failures.append((os.path.basename(case), why))
        ops = missing_ops(why)
        missing.update(ops)
        other += not ops
    total = len(cases)
    print(f"ONNX node tests (onnx {onnx.__version__}, onnxruntime {ort.__version__}): {total} tests")
    for runtime, n in passed.items():
        print(f"  {runtime:12s} passes {n:5d} of {total} ({n / total:.1%})")
    print("  ops tessera lacks, by tests failed: " + ", ".join(f"{op} ({n})" for op, n in missing.most_common(20)))
    print(f"  tests failed for another reason (a type, an attribute, a wrong output): {other}")
    if args.list_failures:
        for name, why in failures:
            print(f"  FAIL {name}: {why}")
    if args.write_passing:
        with open(args.write_passing, "w") as f:
            f.write("".join(name + "\n" for name in passing))
    print(f"{passed['tessera']} passed, {total - passed['tessera']} failed")
    return 0


if __name__ == "__main__":
    sys.exit(main())
