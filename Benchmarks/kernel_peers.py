"""Peers for `tessera-bench kernels`: numpy/OpenBLAS dense, scipy CSR and onnxruntime
(fp32 MatMul, int8 MatMulInteger) on the same shapes, one and two threads.

Prints one JSON object: {"M,K,N": {"numpy": {threads: seconds}, ...}}. Weights are W [M, K],
activations X [K, N] (N = batch), as in y = W @ X. Timings are the best of the runs that fit in
BUDGET seconds (default 1), at least five.

    python Benchmarks/kernel_peers.py SHAPES SPARSITIES [BUDGET]
"""
import json
import os
import sys
import time

os.environ.pop("OPENBLAS_CORETYPE", None)   # let OpenBLAS pick its AVX-512 kernels

import numpy as np
import onnx
import onnxruntime as ort
import scipy.sparse
from onnx import TensorProto, helper
from threadpoolctl import threadpool_limits


def best(f, budget=1.0, least=5):
    f()
    times = []
    start = time.perf_counter()
    while len(times) < least or (time.perf_counter() - start < budget and len(times) < 200):
        t = time.perf_counter()
        f()
        times.append(time.perf_counter() - t)
    return min(times)


def ort_session(w, integer, threads):
    m, k = w.shape
    if integer:
        a = helper.make_tensor_value_info("x", TensorProto.UINT8, ["n", k])
        y = helper.make_tensor_value_info("y", TensorProto.INT32, ["n", m])
        b = helper.make_tensor("w", TensorProto.INT8, [k, m], np.ascontiguousarray(w.T).tobytes(), raw=True)
        node = helper.make_node("MatMulInteger", ["x", "w"], ["y"])
    else:
        a = helper.make_tensor_value_info("x", TensorProto.FLOAT, ["n", k])
        y = helper.make_tensor_value_info("y", TensorProto.FLOAT, ["n", m])
        b = helper.make_tensor("w", TensorProto.FLOAT, [k, m], np.ascontiguousarray(w.T).tobytes(), raw=True)
        node = helper.make_node("MatMul", ["x", "w"], ["y"])
    model = helper.make_model(helper.make_graph([node], "g", [a], [y], [b]), opset_imports=[helper.make_opsetid("", 17)])
    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    return ort.InferenceSession(model.SerializeToString(), options, providers=["CPUExecutionProvider"])


def main():
    shapes = [tuple(int(v) for v in s.split("x")) for s in sys.argv[1].split(",")]
    sparsities = [float(s) for s in sys.argv[2].split(",")]
    budget = float(sys.argv[3]) if len(sys.argv) > 3 else 1.0
    rng = np.random.default_rng(0)
    out = {}
    for m, k, n in shapes:
        w = rng.standard_normal((m, k), dtype=np.float32)
        x = rng.standard_normal((k, n), dtype=np.float32)
        xr = np.ascontiguousarray(x.T)                       # onnxruntime takes x as [N, K]
        w8 = rng.integers(-127, 128, (m, k), dtype=np.int8)
        x8 = rng.integers(0, 256, (n, k), dtype=np.uint8)
        row = {"numpy": {}, "ort_fp32": {}, "ort_int8": {}}
        for p in sparsities:
            row[f"scipy_csr_{p}"] = {}
        for threads in (1, 2):
            with threadpool_limits(limits=threads):
                row["numpy"][threads] = best(lambda: w @ x, budget)
                for p in sparsities:
                    mask = rng.random((m, k)) >= p
                    csr = scipy.sparse.csr_array(w * mask)
                    row[f"scipy_csr_{p}"][threads] = best(lambda: csr @ x, budget)
            s = ort_session(w, False, threads)
            row["ort_fp32"][threads] = best(lambda: s.run(None, {"x": xr}), budget)
            s = ort_session(w8, True, threads)
            row["ort_int8"][threads] = best(lambda: s.run(None, {"x": x8}), budget)
        out[f"{m},{k},{n}"] = row
    json.dump(out, sys.stdout)


if __name__ == "__main__":
    main()
