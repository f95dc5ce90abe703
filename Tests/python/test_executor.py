"""The graph executor (`tessera run`) against onnxruntime and the onnx wheel's stored outputs."""
import glob
import json
import os
import sys

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import TensorProto, helper, numpy_helper

from conftest import ROOT, tessera
from make_fixtures import digits_split
from test_onnx_roundtrip import minilm_path

sys.path.insert(0, os.path.join(ROOT, "Benchmarks"))
import node_conformance  # noqa: E402

DIGITS = os.path.join(ROOT, "fixtures", "onnx", "digits_mlp.onnx")
WHEEL_DATA = os.path.join(os.path.dirname(onnx.__file__), "backend", "test", "data")

# Ops of the wheel's model tests that the executor does not implement (strings, training):
# those models must be refused, naming them.
NOT_IMPLEMENTED = {"StringNormalizer", "ai.onnx.preview.training:Gradient"}


def ort_run(model, feeds):
    session = ort.InferenceSession(model, providers=["CPUExecutionProvider"])
    return dict(zip([o.name for o in session.get_outputs()], session.run(None, feeds)))


def tessera_run(model, feeds, work, *extra):
    args = []
    for name, value in feeds.items():
        path = work / f"in_{len(args)}.npy"
        np.save(path, value)
        args += ["--input", f"{name}={path}"]
    out = work / "out.npz"
    tessera("run", model, *args, "-o", out, "--force", *extra)
    with np.load(out) as archive:
        return {k: archive[k] for k in archive.files}


def cosines(a, b):
    a, b = a.reshape(len(a), -1).astype(np.float64), b.reshape(len(b), -1).astype(np.float64)
    return (a * b).sum(1) / np.linalg.norm(a, axis=1) / np.linalg.norm(b, axis=1)


def minilm_feeds(batch=2, tokens=16, seed=0):
    rng = np.random.default_rng(seed)
    ids = rng.integers(1000, 30000, size=(batch, tokens)).astype(np.int64)
    mask = np.ones_like(ids)
    mask[1:, tokens // 2:] = 0   # padded rows exercise the attention mask's Where/Equal path
    return {"input_ids": ids, "attention_mask": mask}


def test_digits_mlp_reproduces_onnxruntime(work):
    x = digits_split()[1]
    expected = ort_run(DIGITS, {"X": x})
    tess = work / "digits.tess"
    tessera("convert", DIGITS, "-o", tess, "--quiet")
    for model in (DIGITS, tess):
        got = tessera_run(model, {"X": x}, work)
        assert got["label"].dtype == np.int64 and np.array_equal(got["label"], expected["label"])
        np.testing.assert_allclose(got["probabilities"], expected["probabilities"], atol=1e-6)


def test_profile_lists_op_types_then_the_slowest_nodes_by_their_output(work):
    """`run --profile`: time per op type, then the slowest nodes (ten at most), each named by the
    output it writes, with its op type; a node's time is part of its type's."""
    np.save(work / "x.npy", digits_split()[1][:8])
    lines = tessera("run", DIGITS, "--input", f"X={work / 'x.npy'}", "--repeat", "3", "--profile").stdout.splitlines()
    header = next(i for i, line in enumerate(lines) if line.split()[:4] == ["op", "nodes", "ms", "per"])
    split = next(i for i, line in enumerate(lines) if line.startswith("slowest nodes (by output)"))
    ops = {}
    for line in lines[header + 1:split]:
        op, _, ms, _ = line.rsplit(None, 3)
        ops[op] = float(ms)
    outputs = {o for node in onnx.load(DIGITS).graph.node for o in node.output}
    rows = []
    for line in lines[split + 1:]:
        name, rest = line.split(None, 1)
        op, ms, share = rest.rsplit(None, 2)
        rows.append((name, op, float(ms)))
    assert 1 <= len(rows) <= 10 and len({name for name, _, _ in rows}) == len(rows)
    assert [ms for _, _, ms in rows] == sorted((ms for _, _, ms in rows), reverse=True)
    for name, op, ms in rows:
        assert name in outputs and op in ops, (name, op)
    for op in ops:
        assert sum(ms for _, o, ms in rows if o == op) <= ops[op] + 0.001 * len(rows)


def test_minilm_embedding_matches_onnxruntime_in_fp32(work):
    feeds = minilm_feeds()
    expected = ort_run(minilm_path(), feeds)["461"]
    tess = work / "minilm.tess"
    tessera("convert", minilm_path(), "-o", tess, "--quiet")
    got = tessera_run(tess, feeds, work)["461"]
    assert got.shape == expected.shape
    assert cosines(got, expected).min() >= 0.99999
    assert np.abs(got - expected).max() < 1e-4


@pytest.mark.parametrize("flags", [["--quantize", "int8"], ["--prune", "2:4"], ["--prune", "2:4", "--quantize", "int8"],
                                   ["--quantize", "int4:group=32"]], ids=["int8", "2:4", "2:4+int8", "int4"])
def test_converted_digits_agree_with_onnxruntime_on_the_export(flags, work):
    """The executor runs the stored layouts through their kernels; onnxruntime runs the
    densified export. Both compute the same function, so they must agree."""
    x = digits_split()[1]
    tess, exported = work / "d.tess", work / "d.onnx"
    tessera("convert", DIGITS, "-o", tess, "--quiet", *flags)
    tessera("export", tess, "-o", exported)
    expected = ort_run(str(exported), {"X": x})
    got = tessera_run(tess, {"X": x}, work)
    np.testing.assert_allclose(got["probabilities"], expected["probabilities"], atol=1e-5)
    assert (got["label"] == expected["label"]).mean() >= 0.995   # ties within float rounding may flip


def test_converted_minilm_agrees_with_onnxruntime_on_the_export(work):
    feeds = minilm_feeds()
    tess, exported = work / "m.tess", work / "m.onnx"
    tessera("convert", minilm_path(), "-o", tess, "--quiet", "--prune", "2:4", "--quantize", "int8")
    tessera("export", tess, "-o", exported)
    expected = ort_run(str(exported), feeds)["461"]
    got = tessera_run(tess, feeds, work)["461"]
    assert cosines(got, expected).min() >= 0.99999


def dynamic_quantize_rows(x):
    """Each row as ONNX DynamicQuantizeLinear quantizes it, dequantized again (float64)."""
    x = x.astype(np.float64)
    low, high = np.minimum(x.min(1, keepdims=True), 0), np.maximum(x.max(1, keepdims=True), 0)
    scale = ((high - low) / 255).astype(np.float32).astype(np.float64)
    safe = np.where(scale == 0, 1, scale)
    zero = np.clip(np.round(-low / safe), 0, 255)
    codes = np.clip(np.round(x / safe) + zero, 0, 255)
    return np.where(scale == 0, 0, (codes - zero) * scale)


def test_int8_activations_run_the_quantized_arithmetic(work):
    """`run --activations int8`: each int8 weight's activation rows are quantized as
    DynamicQuantizeLinear does before the product (W8A8). The oracle is the digits MLP in numpy,
    float64, with exactly that rounding on the two layers the converter quantized."""
    x = digits_split()[1][:40]
    tess, exported = work / "d.tess", work / "d.onnx"
    tessera("convert", DIGITS, "-o", tess, "--quiet", "--quantize", "int8")
    tessera("export", tess, "-o", exported)
    source = {i.name: numpy_helper.to_array(i) for i in onnx.load(DIGITS).graph.initializer}
    weights = {i.name: numpy_helper.to_array(i).astype(np.float64) for i in onnx.load(str(exported)).graph.initializer}
    quantized = {name for name in ("coefficient", "coefficient1", "coefficient2") if not np.array_equal(weights[name], source[name])}
    assert quantized == {"coefficient", "coefficient1"}

    def mlp(integer):
        h = x.astype(np.float32).astype(np.float64)
        for k, suffix in enumerate(["", "1", "2"]):
            a = dynamic_quantize_rows(h) if integer and "coefficient" + suffix in quantized else h
            h = a @ weights["coefficient" + suffix] + weights["intercepts" + suffix]
            h = np.maximum(h, 0) if k < 2 else np.exp(h - h.max(1, keepdims=True)) / np.exp(h - h.max(1, keepdims=True)).sum(1, keepdims=True)
        return h

    expected, reference = mlp(True), mlp(False)
    assert np.abs(expected - reference).max() > 1e-4   # the two arithmetics are told apart below
    got = tessera_run(tess, {"X": x}, work, "--activations", "int8")["probabilities"]
    np.testing.assert_allclose(got, expected, atol=2e-6)
    np.testing.assert_allclose(tessera_run(tess, {"X": x}, work)["probabilities"], reference, atol=2e-6)


def test_minilm_with_int8_activations_stays_close_and_verify_reports_it(work):
    """W8A8 on every int8 MatMul of MiniLM stays within cosine 0.999 of onnxruntime's fp32 source,
    and `verify --activations int8` runs level 4 that way and says so."""
    feeds = minilm_feeds()
    expected = ort_run(minilm_path(), feeds)["461"]
    tess = work / "m.tess"
    tessera("convert", minilm_path(), "-o", tess, "--quiet", "--quantize", "int8")
    integer = tessera_run(tess, feeds, work, "--activations", "int8")["461"]
    reference = tessera_run(tess, feeds, work)["461"]
    assert cosines(integer, expected).min() >= 0.999
    assert not np.array_equal(integer, reference)
    report = json.loads(tessera("verify", tess, "--source", minilm_path(), "--dim", "sequence_length=9", "--json",
                                "--activations", "int8", "--min-output-cosine", "0.999").stdout)
    assert report["passed"] and report["end_to_end"]["activations"] == "int8"


def small_cnn(path, rng):
    """Conv (groups, strides, pads, dilations), BatchNorm, pools, Flatten, Gemm, Softmax."""
    def init(name, shape):
        return numpy_helper.from_array(rng.standard_normal(shape).astype(np.float32) * 0.3, name)
    nodes = [
        helper.make_node("Conv", ["x", "w1", "b1"], ["c1"], strides=[2, 1], pads=[1, 2, 1, 0], dilations=[1, 2]),
        helper.make_node("Relu", ["c1"], ["r1"]),
        helper.make_node("Conv", ["r1", "w2"], ["c2"], group=2, pads=[1, 1, 1, 1]),
        helper.make_node("BatchNormalization", ["c2", "bn_s", "bn_b", "bn_m", "bn_v"], ["n2"]),
        helper.make_node("MaxPool", ["n2"], ["p2"], kernel_shape=[2, 2], strides=[2, 2], ceil_mode=1),
        helper.make_node("AveragePool", ["p2"], ["a2"], kernel_shape=[3, 3], pads=[1, 1, 1, 1], count_include_pad=0),
        helper.make_node("GlobalAveragePool", ["a2"], ["g"]),
        helper.make_node("Flatten", ["g"], ["f"]),
        helper.make_node("Gemm", ["f", "fc", "fc_b"], ["logits"], transB=1),
        helper.make_node("Softmax", ["logits"], ["y"]),
    ]
    inits = [init("w1", (16, 4, 3, 3)), init("b1", (16,)), init("w2", (32, 8, 3, 3)),
             init("bn_s", (32,)), init("bn_b", (32,)), init("bn_m", (32,)),
             numpy_helper.from_array(rng.uniform(0.5, 2, 32).astype(np.float32), "bn_v"),
             init("fc", (10, 32)), init("fc_b", (10,))]
    graph = helper.make_graph(nodes, "cnn", [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 4, 15, 13])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", 10])], inits)
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), path)


@pytest.mark.parametrize("flags", [[], ["--prune", "2:4", "--minimum-elements", "1"],
                                   ["--prune", "2:4", "--quantize", "int8", "--minimum-elements", "1"],
                                   ["--prune", "magnitude:0.9", "--layout", "csr", "--minimum-elements", "1"]],
                         ids=["lossless", "2:4", "2:4+int8", "csr"])
def test_small_cnn_with_stored_conv_weights_matches_onnxruntime(flags, work):
    rng = np.random.default_rng(1)
    source, tess, exported = work / "cnn.onnx", work / "cnn.tess", work / "cnn_export.onnx"
    small_cnn(str(source), rng)
    tessera("convert", source, "-o", tess, "--quiet", *flags)
    tessera("export", tess, "-o", exported)
    x = rng.standard_normal((3, 4, 15, 13)).astype(np.float32)
    expected = ort_run(str(exported), {"x": x})["y"]
    got = tessera_run(tess, {"x": x}, work, "--threads", "2")["y"]
    np.testing.assert_allclose(got, expected, atol=1e-5)
    if flags:   # the weights really are stored sparse, not densified by the converter
        inspect = tessera("inspect", tess).stdout
        assert ("sparse24" if "2:4" in flags else "csr") in inspect


def wheel_models():
    return sorted(glob.glob(os.path.join(WHEEL_DATA, "*", "*", "model.onnx")))


def model_id(path):
    return os.path.relpath(os.path.dirname(path), WHEEL_DATA)


@pytest.mark.parametrize("model", wheel_models(), ids=model_id)
def test_onnx_wheel_model_tests(model, work):
    """Every model test of the onnx wheel: converted losslessly, run, and compared with its
    stored outputs (the tolerance onnx's own backend tests use); or refused, naming every op
    the executor lacks."""
    # Some feed float64 inputs holding uninitialised memory (values up to 1e223), which
    # float32 arithmetic would overflow: float64 is computed in float64.
    proto = onnx.load(model)
    ops = {(f"{n.domain}:" if n.domain not in ("", "ai.onnx") else "") + n.op_type for n in proto.graph.node}
    missing = ops & NOT_IMPLEMENTED
    tess = work / "m.tess"
    tessera("convert", model, "-o", tess, "--quiet")
    data = os.path.join(os.path.dirname(model), "test_data_set_0")
    inputs = sorted(glob.glob(os.path.join(data, "input_*.pb")), key=lambda p: int(p.rsplit("_", 1)[1][:-3]))
    initializers = {t.name for t in proto.graph.initializer}
    names = [i.name for i in proto.graph.input if i.name not in initializers]
    out = work / "out.npz"
    result = tessera("run", tess, *sum([["--input", f"{n}={p}"] for n, p in zip(names, inputs)], []), "-o", out, check=False)
    if missing:
        assert result.returncode == 1 and not out.exists()
        assert all(op in result.stderr for op in missing), result.stderr
        return
    assert result.returncode == 0, result.stderr
    with np.load(out) as got:
        for k, output in enumerate(proto.graph.output):
            expected = node_conformance.load_pb(os.path.join(data, f"output_{k}.pb"), node_conformance.kind(output))
            actual = node_conformance.from_npz(got, output.name)
            for e, a in zip(*((expected, actual) if isinstance(expected, list) else ([expected], [actual]))):
                assert a.shape == e.shape and a.dtype == e.dtype
                np.testing.assert_allclose(a, e, rtol=1e-3, atol=1e-7, equal_nan=True)
            assert not isinstance(expected, list) or len(actual) == len(expected)


def test_float64_is_computed_in_float64(work):
    """Each path differs from float32 in the 8th digit or beyond: x = 1 + 1e-12 is 1 in float32."""
    D = TensorProto.DOUBLE
    w = numpy_helper.from_array(np.array([[1.0 + 1e-13, -1.0], [2.0, 1e-9]]), "w")
    nodes = [helper.make_node("Sub", ["x", "one"], ["d"]),                       # 1e-12, not 0
             helper.make_node("Exp", ["x"], ["e"]),
             helper.make_node("MatMul", ["x", "w"], ["m"]),
             helper.make_node("Gemm", ["x", "w", "d"], ["g"], transB=1, alpha=0.5),
             helper.make_node("Softmax", ["m"], ["s"], axis=-1),
             helper.make_node("ReduceSum", ["m"], ["r"], keepdims=0),
             helper.make_node("CumSum", ["x", "axis"], ["c"]),
             helper.make_node("Concat", ["x", "d"], ["cat"], axis=0)]
    outputs = ["d", "e", "m", "g", "s", "r", "c", "cat"]
    graph = helper.make_graph(nodes, "f64", [helper.make_tensor_value_info("x", D, [2, 2])],
                              [helper.make_tensor_value_info(o, D, None) for o in outputs],
                              initializer=[w, numpy_helper.from_array(np.array(1.0), "one"),
                                           numpy_helper.from_array(np.array(1, np.int64), "axis")])
    model = work / "f64.onnx"
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), model)
    x = np.array([[1.0 + 1e-12, 3.0 + 1e-10], [-2.0 + 1e-11, 0.5]])
    expected = ort_run(str(model), {"x": x})
    got = tessera_run(model, {"x": x}, work)
    for name in outputs:
        assert got[name].dtype == np.float64, name
        np.testing.assert_allclose(got[name], expected[name], rtol=1e-13, atol=1e-24, err_msg=name)
    assert got["d"][0, 0] != 0


def _gelu(x):
    from math import erf
    return 0.5 * x * (1 + np.vectorize(erf)(x / np.sqrt(2)))


def _lrn(x, size=3, alpha=1e-4, beta=0.75, bias=1.0):
    squares = np.zeros_like(x)
    for c in range(x.shape[1]):
        squares[:, c] = (x[:, max(0, c - (size - 1) // 2): c + size // 2 + 1] ** 2).sum(1)
    return x / (bias + alpha / size * squares) ** beta


def _group_norm(x, scale, bias, groups=2, epsilon=float(np.float32(1e-5))):
    g = x.reshape(x.shape[0], groups, -1)
    normal = ((g - g.mean(2, keepdims=True)) / np.sqrt(g.var(2, keepdims=True) + epsilon)).reshape(x.shape)
    return normal * scale[None, :, None] + bias[None, :, None]


def _f64_cases():
    """(op, inputs, attributes, opset, oracle) for each op family with a float64 path beyond the
    basic ones above. Inputs carry all 53 bits, so a path through float32 is off by about 1e-8.
    The oracle is onnx's reference implementation, or onnxruntime ("ort") where the reference
    computes in float32 (its function bodies' float constants) and onnxruntime has a float64
    kernel, or numpy."""
    rng = np.random.default_rng(7)
    d = lambda *shape: rng.standard_normal(shape)
    image, close = d(1, 2, 5, 5), np.array([[1.0, 1.0 + 1e-12, 1.0 - 1e-12]])
    cases = [(op, [d(3, 4)], attrs, 22, "ref") for op, attrs in [
        ("Elu", {"alpha": 0.7}), ("Selu", {}), ("LeakyRelu", {"alpha": 0.3}), ("HardSigmoid", {}),
        ("Celu", {"alpha": 1.5}), ("ThresholdedRelu", {"alpha": 0.1}), ("Shrink", {"bias": 0.25, "lambd": 0.3}),
        ("LpNormalization", {"axis": 1})]]
    x = d(3, 4)
    cases += [
        ("Gelu", [x], {}, 20, lambda x: _gelu(x)),
        ("Gelu", [x], {"approximate": "tanh"}, 20, lambda x: 0.5 * x * (1 + np.tanh(np.sqrt(2 / np.pi) * (x + 0.044715 * x ** 3)))),
        ("MeanVarianceNormalization", [x], {"axes": [1]}, 13, lambda x: (x - x.mean(1, keepdims=True)) / (x.std(1, keepdims=True) + 1e-9)),
        ("Hardmax", [close], {}, 13, "ref"), ("ArgMax", [close], {"axis": 1}, 13, "ref"), ("TopK", [close, np.array([2])], {}, 11, "ref"),
        ("Unique", [np.array([1.0, 1.0 + 1e-12, 1.0])], {}, 11, "ref"), ("NonZero", [np.array([0.0, 1e-50, 1e300])], {}, 13, "ref"),
        ("IsInf", [np.array([1e300, -np.inf, 1.0])], {}, 20, "ref"), ("Range", [np.array(0.1), np.array(1.0), np.array(0.3)], {}, 11, "ref"),
        ("LayerNormalization", [d(2, 6), d(6), d(6)], {}, 17, "ort"), ("RMSNormalization", [d(2, 6), d(6)], {}, 23, "ref"),
        ("GroupNormalization", [d(2, 4, 3), d(4), d(4)], {"num_groups": 2}, 21, _group_norm),   # onnxruntime's rounds to float32
        ("BatchNormalization", [image, d(2), d(2), d(2), np.abs(d(2))], {}, 15, "ref"),
        ("InstanceNormalization", [image, d(2), d(2)], {}, 6, "ref"), ("LRN", [image], {"size": 3}, 13, _lrn),
        ("MaxPool", [image], {"kernel_shape": [2, 2]}, 12, "ref"),
        ("AveragePool", [image], {"kernel_shape": [3, 3], "pads": [1, 1, 1, 1]}, 19, "ref"),
        ("LpPool", [image], {"kernel_shape": [2, 2], "p": 3}, 18, "ref"), ("GlobalAveragePool", [image], {}, 1, "ref"),
        ("GlobalMaxPool", [image], {}, 1, "ref"),
        ("Conv", [image, d(3, 2, 3, 3), d(3)], {"pads": [1, 1, 1, 1]}, 11, "ref"),
        ("Conv", [image, d(2, 1, 3, 3)], {"group": 2, "strides": [2, 2]}, 11, "ref"),
        ("ConvTranspose", [image, d(2, 3, 3, 3), d(3)], {"strides": [2, 2]}, 11, "ref"),
        ("Col2Im", [d(1, 8, 4), np.array([3, 3]), np.array([2, 2])], {}, 18, "ref"),
        ("Einsum", [d(3, 4), d(4, 5)], {"equation": "ij,jk->ik"}, 12, "ref"), ("Det", [d(2, 3, 3)], {}, 11, "ref"),
        ("GridSample", [image, rng.uniform(-1, 1, (1, 3, 3, 2))], {"mode": "linear"}, 20, "ort"),
        ("AffineGrid", [d(1, 2, 3), np.array([1, 2, 4, 4])], {}, 20, "ort"),
        ("Resize", [image, np.array([]), np.array([1, 1, 2.0, 2.0])], {"mode": "linear"}, 19, "ref"),
        ("DFT", [d(1, 8, 1), np.array(8), np.array(1)], {}, 20, "ref"),
        ("HannWindow", [np.array(7)], {"output_datatype": TensorProto.DOUBLE}, 17, "ref"),
        ("RoiAlign", [image, np.array([[0.3, 0.7, 3.1, 4.2]]) + d(1, 4) * 1e-3, np.array([0])],
         {"output_height": 2, "output_width": 2, "sampling_ratio": 2}, 16, "ref"),
        ("NonMaxSuppression", [np.array([[[0.0, 0, 1, 1], [0.5, 0.5, 1.5, 1.5]]]), np.array([[[1.0, 1.0 + 1e-12]]]), np.array([1]),
          np.array([0.5]), np.array([0.0])], {}, 11, "ref"),
        ("NegativeLogLikelihoodLoss", [d(3, 4), np.array([0, 3, 1]), np.abs(d(4))], {}, 13, "ref"),
        ("SoftmaxCrossEntropyLoss", [d(3, 4), np.array([0, 3, 1])], {"reduction": "sum"}, 13, "ref")]
    return cases


@pytest.mark.parametrize("op, inputs, attributes, opset, oracle", _f64_cases(), ids=lambda v: v if isinstance(v, str) else "")
def test_more_float64_ops_compute_in_float64(work, op, inputs, attributes, opset, oracle):
    from onnx.reference import ReferenceEvaluator
    names = [f"i{k}" for k in range(len(inputs))]
    infos = [helper.make_tensor_value_info(n, helper.np_dtype_to_tensor_dtype(v.dtype), v.shape) for n, v in zip(names, inputs)]
    node = helper.make_node(op, names, ["y"], **attributes)
    # onnxruntime needs the output's type; the reference infers it (some outputs are integers).
    output = helper.make_tensor_value_info("y", TensorProto.DOUBLE if oracle == "ort" else TensorProto.UNDEFINED, None)
    graph = helper.make_graph([node], "f64", infos, [output])
    model = work / "f64.onnx"
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)]), model)
    feeds = dict(zip(names, inputs))
    if oracle == "ref":
        expected = ReferenceEvaluator(str(model)).run(None, feeds)[0]
    elif oracle == "ort":
        expected = ort_run(str(model), feeds)["y"]
    else:
        expected = oracle(*inputs)
    got = tessera_run(model, feeds, work)["y"]
    assert got.dtype == expected.dtype, (got.dtype, expected.dtype)
    np.testing.assert_allclose(got, expected, rtol=1e-11, atol=1e-14)


def portable_and_chosen(model, feeds, work, variants=("",)):
    """The outputs of `model` on `feeds` with TESSERA_ISA=portable and with each of `variants`
    (by default the kernel variant chosen for this CPU)."""
    import subprocess
    from conftest import tessera_binary
    args = []
    for name, value in feeds.items():
        np.save(work / f"{name}.npy", value)
        args += ["--input", f"{name}={work / f'{name}.npy'}"]
    outputs = []
    for isa in ("portable", *variants):
        out = work / f"out{isa}.npz"
        result = subprocess.run([tessera_binary(), "run", model, *args, "-o", out, "--force"], capture_output=True, text=True,
                                env={**os.environ, "TESSERA_ISA": isa})
        assert result.returncode == 0, result.stderr
        assert isa != "portable" or ", portable kernels" in result.stdout, result.stdout
        with np.load(out) as archive:
            outputs.append({key: archive[key] for key in archive.files})
    return outputs


def test_every_kernel_variant_gives_the_same_outputs(work):
    """TESSERA_ISA picks the kernels' variant (capped at what this CPU runs): MiniLM (GEMM tiles
    and attention products) and the digits MLP dense, 2:4 and CSR, batched and one row (GEMV),
    give the same bits through the portable kernels as through the one chosen for this CPU."""
    import subprocess
    from conftest import tessera_binary
    rng = np.random.default_rng(5)
    cases = [(minilm_path(), minilm_feeds(batch=2, tokens=9)), (minilm_path(), minilm_feeds(batch=1, tokens=1))]
    for name, args in [("dense", []), ("sparse24", ["--prune", "2:4"]), ("csr", ["--prune", "magnitude:0.8", "--layout", "csr"])]:
        tessera("convert", DIGITS, "-o", work / f"{name}.tess", "--quiet", *args)
        cases += [(work / f"{name}.tess", {"X": rng.standard_normal((rows, 64)).astype(np.float32)}) for rows in (37, 1)]
    for k, (model, feeds) in enumerate(cases):
        portable, chosen = portable_and_chosen(model, feeds, work)
        for key, value in portable.items():
            assert np.array_equal(value, chosen[key]), (k, key)
    refused = subprocess.run([tessera_binary(), "run", minilm_path(), "-o", work / "x.npz"], capture_output=True, text=True,
                             env={**os.environ, "TESSERA_ISA": "sse9"})
    assert refused.returncode == 1 and "TESSERA_ISA is 'sse9'; it must be one of portable, avx2, avx512" in refused.stderr


def test_maxpool_agrees_across_kernel_variants(work):
    """2-D MaxPool without indices (the C kernel's rows, sixteen outputs at a time where the row
    allows, in the chosen and the AVX2 variant) against the portable tap table: the same bits for
    strides, dilations, pads, SAME padding and ceil_mode, with NaN and infinities too; and
    onnxruntime's values on finite inputs."""
    rng = np.random.default_rng(12)
    for k, attributes in enumerate([{"kernel_shape": [3, 3], "strides": [2, 2], "pads": [1, 1, 1, 1]},
                                    {"kernel_shape": [2, 2], "auto_pad": "SAME_UPPER"}, {"kernel_shape": [3, 3], "dilations": [2, 2]},
                                    {"kernel_shape": [3, 2], "strides": [2, 3], "ceil_mode": 1, "pads": [0, 1, 2, 1]}]):
        node = helper.make_node("MaxPool", ["x"], ["y"], **attributes)
        graph = helper.make_graph([node], "mp", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [2, 3, 17, 45])],
                                  [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)])
        model = work / f"mp{k}.onnx"
        onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 12)]), model)
        x = rng.standard_normal((2, 3, 17, 45)).astype(np.float32)
        portable, chosen = portable_and_chosen(model, {"x": x}, work)
        assert np.array_equal(portable["y"], chosen["y"]), attributes
        np.testing.assert_array_equal(chosen["y"], ort_run(str(model), {"x": x})["y"], err_msg=str(attributes))
        special = x.copy()
        special.flat[rng.choice(special.size, 60, replace=False)] = np.array([np.nan, np.inf, -np.inf], np.float32).repeat(20)
        outputs = portable_and_chosen(model, {"x": special}, work, variants=("", "avx2"))
        assert all(np.array_equal(outputs[0]["y"], other["y"], equal_nan=True) for other in outputs[1:]), attributes


def test_depthwise_convolutions_agree_across_kernel_variants(work):
    """2-D depthwise Conv (the C kernel's vector rows, four at a time and the rest, in the chosen
    and the AVX2 variant) against the portable tap table: the same bits, for strides 1 to 3,
    dilations, asymmetric pads, SAME padding and channel multipliers; and onnxruntime's values."""
    rng = np.random.default_rng(11)
    cases = [({"kernel_shape": [3, 3], "pads": [1, 1, 1, 1]}, 1), ({"kernel_shape": [5, 5], "pads": [2, 1, 2, 3], "strides": [2, 2]}, 1),
             ({"kernel_shape": [3, 3], "dilations": [2, 3], "pads": [2, 3, 2, 3]}, 1), ({"kernel_shape": [3, 5], "strides": [3, 1]}, 1),
             ({"kernel_shape": [3, 3], "auto_pad": "SAME_UPPER", "strides": [2, 2]}, 2), ({"kernel_shape": [7, 7], "pads": [3, 3, 3, 3]}, 1)]
    for k, (attributes, multiplier) in enumerate(cases):
        channels = 4
        kh, kw = attributes["kernel_shape"]
        weight = numpy_helper.from_array(rng.standard_normal((channels * multiplier, 1, kh, kw)).astype(np.float32), "w")
        bias = numpy_helper.from_array(rng.standard_normal(channels * multiplier).astype(np.float32), "b")
        node = helper.make_node("Conv", ["x", "w", "b"], ["y"], group=channels, **attributes)
        graph = helper.make_graph([node], "dw", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [2, channels, 19, 23])],
                                  [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)], initializer=[weight, bias])
        model = work / f"dw{k}.onnx"
        onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), model)
        x = rng.standard_normal((2, channels, 19, 23)).astype(np.float32)
        portable, chosen, avx2 = portable_and_chosen(model, {"x": x}, work, variants=("", "avx2"))
        assert np.array_equal(portable["y"], chosen["y"]) and np.array_equal(portable["y"], avx2["y"]), attributes
        np.testing.assert_allclose(chosen["y"], ort_run(str(model), {"x": x})["y"], rtol=1e-5, atol=1e-5, err_msg=str(attributes))


def test_missing_ops_are_all_named_before_running(work):
    nodes = [helper.make_node("Relu", ["x"], ["a"]), helper.make_node("ImageDecoder", ["a"], ["b"]),
             helper.make_node("StringNormalizer", ["b"], ["c"]), helper.make_node("ImageDecoder", ["c"], ["y"])]
    graph = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [2, 2])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [2, 2])])
    model = work / "m.onnx"
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), model)
    np.save(work / "x.npy", np.ones((2, 2), np.float32))
    result = tessera("run", model, "--input", f"x={work / 'x.npy'}", "-o", work / "o.npz", check=False)
    assert result.returncode == 1 and "Traceback" not in result.stderr
    assert "lacks 2 op(s)" in result.stderr and "ImageDecoder (2 nodes)" in result.stderr and "StringNormalizer" in result.stderr
    assert not (work / "o.npz").exists()


def test_bad_inputs_are_refused_with_their_name(work):
    tess = work / "digits.tess"
    tessera("convert", DIGITS, "-o", tess, "--quiet")
    np.save(work / "wrong.npy", np.ones((5, 63), np.float32))
    np.save(work / "ints.npy", np.ones((5, 64), np.int64))
    (work / "junk.npy").write_bytes(b"not numpy")
    out = work / "o.npz"
    cases = [(["--input", f"X={work / 'wrong.npy'}"], "input 'X' has shape [5, 63]; the graph declares [?, 64]"),
             (["--input", f"X={work / 'ints.npy'}"], "input 'X' is int64; the graph declares float32"),
             (["--input", f"X={work / 'junk.npy'}"], "not a readable .npy array"),
             (["--input", f"Y={work / 'wrong.npy'}"], "'Y' is not an input of the graph"),
             ([], "graph input 'X' is not given"),
             (["--input", f"X={work / 'missing.npy'}"], "missing.npy: cannot open: No such file or directory")]
    for args, message in cases:
        result = tessera("run", tess, *args, "-o", out, check=False)
        assert result.returncode == 1 and message in result.stderr, (args, result.stderr)
        assert not out.exists()
    out.write_bytes(b"keep")
    np.save(work / "ok.npy", np.ones((5, 64), np.float32))
    result = tessera("run", tess, "--input", f"X={work / 'ok.npy'}", "-o", out, check=False)
    assert result.returncode == 1 and "--force" in result.stderr and out.read_bytes() == b"keep"


def test_verify_level_4_runs_both_models_and_applies_thresholds(work):
    x = digits_split()[1]
    np.save(work / "x.npy", x)
    tess = work / "d.tess"
    tessera("convert", DIGITS, "-o", tess, "--quiet")
    ok = tessera("verify", tess, "--source", DIGITS, "--input", f"X={work / 'x.npy'}",
                 "--min-output-cosine", "0.99999", "--min-top1", "1", "--max-output-error", "1e-5")
    assert "level 4: source and file run on 1 sample(s): given files" in ok.stdout and "verdict: OK" in ok.stdout

    lossy = work / "lossy.tess"
    tessera("convert", minilm_path(), "-o", lossy, "--quiet", "--prune", "2:4")
    result = tessera("verify", lossy, "--source", minilm_path(), "--dim", "sequence_length=5", "--json",
                     "--min-output-cosine", "0.99", check=False)
    assert result.returncode == 1 and "problem(s)" in result.stderr
    report = json.loads(result.stdout)
    assert not report["passed"] and report["end_to_end"]["samples"] == ["generated (seed 0)"]
    embedding = next(o for o in report["end_to_end"]["outputs"] if o["name"] == "461")
    assert embedding["shape"] == [2, 384] and embedding["min_cosine"] < 0.99 and embedding["problems"]


def test_verify_level_4_uses_test_data_sets_and_reports_missing_ops(work):
    conv = os.path.join(WHEEL_DATA, "pytorch-converted", "test_Conv2d_strided", "model.onnx")
    tess = work / "c.tess"
    tessera("convert", conv, "-o", tess, "--quiet")
    result = tessera("verify", tess, "--source", conv, "--min-output-cosine", "0.999999")
    assert "run on 1 sample(s): test_data_set_0" in result.stdout and "verdict: OK" in result.stdout

    sequences = os.path.join(WHEEL_DATA, "simple", "test_sequence_model1", "model.onnx")
    tessera("convert", sequences, "-o", tess, "--quiet", "--force")
    result = tessera("verify", tess, "--source", sequences, "--min-output-cosine", "0.999999")
    assert "run on 1 sample(s): test_data_set_0" in result.stdout and "verdict: OK" in result.stdout

    strings = os.path.join(WHEEL_DATA, "simple", "test_strnorm_model_monday_casesensintive_lower", "model.onnx")
    tessera("convert", strings, "-o", tess, "--quiet", "--force")
    assert "level 4 skipped: the executor lacks StringNormalizer" in tessera("verify", tess, "--source", strings).stdout
    strict = tessera("verify", tess, "--source", strings, "--min-output-cosine", "0.9", check=False)
    assert strict.returncode == 1


def test_verify_level_4_feeds_and_compares_sequences(work):
    """A graph whose input and output are sequences: verify reads the SequenceProto from the
    test data set (or --input) and compares the output sequence item by item."""
    rng = np.random.default_rng(3)
    w = numpy_helper.from_array(rng.standard_normal((4, 64)).astype(np.float32), "w")
    nodes = [helper.make_node("ConcatFromSequence", ["seq"], ["x"], axis=0),
             helper.make_node("MatMul", ["x", "w"], ["y"]),
             helper.make_node("SplitToSequence", ["y"], ["parts"], axis=0)]
    sequence = helper.make_tensor_sequence_value_info("seq", TensorProto.FLOAT, [None, 4])
    parts = helper.make_tensor_sequence_value_info("parts", TensorProto.FLOAT, None)
    graph = helper.make_graph(nodes, "seq", [sequence], [parts], initializer=[w])
    folder = work / "model"
    (folder / "test_data_set_0").mkdir(parents=True)
    source = folder / "model.onnx"
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), source)
    items = [rng.standard_normal((n, 4)).astype(np.float32) for n in (1, 2, 3)]
    proto = numpy_helper.from_list(items, "seq")
    (folder / "test_data_set_0" / "input_0.pb").write_bytes(proto.SerializeToString())
    tess = work / "m.tess"
    tessera("convert", source, "-o", tess, "--quiet")
    result = tessera("verify", tess, "--source", source, "--min-output-cosine", "0.999999", "--json")
    report = json.loads(result.stdout)["end_to_end"]
    assert report["samples"] == ["test_data_set_0"]
    assert [o["name"] for o in report["outputs"]] == ["parts[0]", "parts[1]", "parts[2]", "parts[3]", "parts[4]", "parts[5]"]
    assert all(o["min_cosine"] > 0.999999 for o in report["outputs"])
    given = tessera("verify", tess, "--source", source, "--input", f"seq={folder / 'test_data_set_0' / 'input_0.pb'}")
    assert "run on 1 sample(s): given files" in given.stdout and "verdict: OK" in given.stdout


def test_control_flow_bodies_read_outer_values_and_hold_their_own_weights(work):
    """If, Loop and Scan bodies that read values of the main graph and carry their own
    initializers and Constants, converted to .tess (the bodies' tensors become stored tensors)
    and run: the same outputs as onnxruntime."""
    rng = np.random.default_rng(7)
    w_then = rng.standard_normal((4, 4)).astype(np.float32)
    then_branch = helper.make_graph(
        [helper.make_node("MatMul", ["h", "w_then"], ["t0"]), helper.make_node("Add", ["t0", "bias"], ["out"])],
        "then", [], [helper.make_tensor_value_info("out", TensorProto.FLOAT, None)],
        initializer=[numpy_helper.from_array(w_then, "w_then")])
    else_branch = helper.make_graph(
        [helper.make_node("Constant", [], ["k"], value=numpy_helper.from_array(np.full((4,), 3, np.float32))),
         helper.make_node("Mul", ["h", "k"], ["out"])],
        "else", [], [helper.make_tensor_value_info("out", TensorProto.FLOAT, None)])
    # Loop: three times, acc = acc @ w_loop + h (h from the main graph); scan output each acc.
    w_loop = (rng.standard_normal((4, 4)) * 0.3).astype(np.float32)
    loop_body = helper.make_graph(
        [helper.make_node("MatMul", ["acc_in", "w_loop"], ["m"]), helper.make_node("Add", ["m", "h"], ["acc_out"]),
         helper.make_node("Identity", ["cond_in"], ["cond_out"]), helper.make_node("Identity", ["acc_out"], ["scan_out"])],
        "loop", [helper.make_tensor_value_info("i", TensorProto.INT64, []), helper.make_tensor_value_info("cond_in", TensorProto.BOOL, []),
                 helper.make_tensor_value_info("acc_in", TensorProto.FLOAT, None)],
        [helper.make_tensor_value_info("cond_out", TensorProto.BOOL, []), helper.make_tensor_value_info("acc_out", TensorProto.FLOAT, None),
         helper.make_tensor_value_info("scan_out", TensorProto.FLOAT, None)],
        initializer=[numpy_helper.from_array(w_loop, "w_loop")])
    # Scan: running sum over the rows of x, plus the outer bias.
    scan_body = helper.make_graph(
        [helper.make_node("Add", ["s_in", "row"], ["s_out"]), helper.make_node("Add", ["s_out", "bias"], ["y_row"])],
        "scan", [helper.make_tensor_value_info("s_in", TensorProto.FLOAT, [4]), helper.make_tensor_value_info("row", TensorProto.FLOAT, [4])],
        [helper.make_tensor_value_info("s_out", TensorProto.FLOAT, [4]), helper.make_tensor_value_info("y_row", TensorProto.FLOAT, [4])])
    nodes = [
        helper.make_node("Relu", ["x"], ["h"]),
        helper.make_node("ReduceSum", ["x"], ["total"], keepdims=0),
        helper.make_node("Greater", ["total", "zero"], ["positive"]),
        helper.make_node("If", ["positive"], ["branch"], then_branch=then_branch, else_branch=else_branch),
        helper.make_node("Loop", ["trips", "", "h"], ["looped", "steps"], body=loop_body),
        helper.make_node("Scan", ["start", "x"], ["final", "rows"], body=scan_body, num_scan_inputs=1),
    ]
    graph = helper.make_graph(
        nodes, "control", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [4, 4])],
        [helper.make_tensor_value_info(n, TensorProto.FLOAT, None) for n in ["branch", "looped", "steps", "final", "rows"]],
        initializer=[numpy_helper.from_array(np.float32(0), "zero"), numpy_helper.from_array(np.arange(4, dtype=np.float32), "bias"),
                     numpy_helper.from_array(np.int64(3), "trips"), numpy_helper.from_array(np.zeros(4, np.float32), "start")])
    model = work / "control.onnx"
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), model)
    tess = work / "control.tess"
    tessera("convert", model, "-o", tess, "--quiet")
    assert "w_then" in tessera("inspect", tess).stdout and "w_loop" in tessera("inspect", tess).stdout
    for x in [rng.standard_normal((4, 4)).astype(np.float32), -np.abs(rng.standard_normal((4, 4))).astype(np.float32)]:
        expected = ort_run(str(model), {"x": x})
        got = tessera_run(tess, {"x": x}, work)
        for name, value in expected.items():
            np.testing.assert_allclose(got[name], value, rtol=1e-5, atol=1e-5, err_msg=name)


@pytest.mark.parametrize("op", ["MatMulIntegerToFloat", "DynamicQuantizeMatMul", "QGemm", "QGemm-quantized", "DynamicQuantizeLSTM"])
def test_onnxruntime_contrib_quantized_ops_match_onnxruntime(op, work):
    """The com.microsoft ops that onnxruntime's quantization tool writes, on random data."""
    rng = np.random.default_rng(3)
    ms = "com.microsoft"
    a = rng.standard_normal((3, 16)).astype(np.float32)
    b_codes = rng.integers(-128, 128, size=(16, 8)).astype(np.int8)
    b_scale = (rng.random(8) * 0.02 + 0.01).astype(np.float32)
    b_zero = np.zeros(8, np.int8)
    bias = rng.standard_normal(8).astype(np.float32)
    inits = [numpy_helper.from_array(b_codes, "B"), numpy_helper.from_array(b_scale, "b_scale"),
             numpy_helper.from_array(b_zero, "b_zero"), numpy_helper.from_array(bias, "bias")]
    feeds, inputs = {"A": a}, [helper.make_tensor_value_info("A", TensorProto.FLOAT, [3, 16])]
    outputs = [helper.make_tensor_value_info("Y", TensorProto.FLOAT, None)]
    if op == "MatMulIntegerToFloat":
        feeds = {"A": rng.integers(0, 256, size=(3, 16)).astype(np.uint8)}
        inputs = [helper.make_tensor_value_info("A", TensorProto.UINT8, [3, 16])]
        inits += [numpy_helper.from_array(np.float32(0.05), "a_scale"), numpy_helper.from_array(np.uint8(120), "a_zero")]
        nodes = [helper.make_node(op, ["A", "B", "a_scale", "b_scale", "a_zero", "b_zero", "bias"], ["Y"], domain=ms)]
    elif op == "DynamicQuantizeMatMul":
        nodes = [helper.make_node(op, ["A", "B", "b_scale", "b_zero", "bias"], ["Y"], domain=ms)]
    elif op.startswith("QGemm"):
        feeds = {"A": rng.integers(0, 256, size=(3, 16)).astype(np.uint8)}
        inputs = [helper.make_tensor_value_info("A", TensorProto.UINT8, [3, 16])]
        inits += [numpy_helper.from_array(np.float32(0.05), "a_scale"), numpy_helper.from_array(np.uint8(120), "a_zero"),
                  numpy_helper.from_array(rng.integers(-500, 500, size=8).astype(np.int32), "C"),
                  numpy_helper.from_array(np.float32(0.2), "y_scale"), numpy_helper.from_array(np.uint8(128), "y_zero")]
        names = ["A", "a_scale", "a_zero", "B", "b_scale", "b_zero", "C"] + (["y_scale", "y_zero"] if op == "QGemm-quantized" else [])
        nodes = [helper.make_node("QGemm", names, ["Y"], domain=ms, alpha=0.5)]
        if op == "QGemm-quantized":
            outputs = [helper.make_tensor_value_info("Y", TensorProto.UINT8, None)]
    else:   # an LSTM with int8 weights [dirs, input, 4·hidden], both directions
        hidden = 4
        inits = [numpy_helper.from_array(rng.integers(-128, 128, size=(2, 16, 4 * hidden)).astype(np.int8), "W"),
                 numpy_helper.from_array(rng.integers(-128, 128, size=(2, hidden, 4 * hidden)).astype(np.int8), "R"),
                 numpy_helper.from_array((rng.standard_normal((2, 8 * hidden)) * 0.1).astype(np.float32), "Bias"),
                 numpy_helper.from_array(np.full(2, 0.01, np.float32), "w_scale"), numpy_helper.from_array(np.zeros(2, np.int8), "w_zero"),
                 numpy_helper.from_array(np.full(2, 0.02, np.float32), "r_scale"), numpy_helper.from_array(np.zeros(2, np.int8), "r_zero")]
        feeds = {"A": rng.standard_normal((5, 1, 16)).astype(np.float32)}
        inputs = [helper.make_tensor_value_info("A", TensorProto.FLOAT, [5, 1, 16])]
        nodes = [helper.make_node(op, ["A", "W", "R", "Bias", "", "", "", "", "w_scale", "w_zero", "r_scale", "r_zero"], ["Y", "Y_h", "Y_c"],
                                  domain=ms, hidden_size=hidden, direction="bidirectional")]
        outputs = [helper.make_tensor_value_info(n, TensorProto.FLOAT, None) for n in ["Y", "Y_h", "Y_c"]]
    graph = helper.make_graph(nodes, "contrib", inputs, outputs, initializer=inits)
    model = work / "contrib.onnx"
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17), helper.make_opsetid(ms, 1)]), model)
    expected = ort_run(str(model), feeds)
    got = tessera_run(model, feeds, work)
    for name, value in expected.items():
        if value.dtype.kind == "f":
            np.testing.assert_allclose(got[name], value, rtol=1e-5, atol=1e-5, err_msg=name)
        else:
            np.testing.assert_array_equal(got[name], value, err_msg=name)


@pytest.mark.parametrize("op", ["ConvInteger", "QLinearConv"])
def test_integer_convolutions_match_onnxruntime(op, work):
    """Grouped, strided, padded convolutions in exact integers (QLinearConv: per-channel weight
    scales, an int32 bias and onnxruntime's rounding)."""
    rng = np.random.default_rng(5)
    x = rng.integers(0, 256, size=(2, 4, 9, 7)).astype(np.uint8)
    w = rng.integers(-128, 128, size=(6, 2, 3, 3)).astype(np.int8)
    attributes = dict(group=2, strides=[2, 1], pads=[1, 0, 1, 2], dilations=[1, 2])
    inits = [numpy_helper.from_array(w, "w"), numpy_helper.from_array(np.uint8(117), "x_zero"),
             numpy_helper.from_array(np.int8(0), "w_zero")]
    if op == "ConvInteger":
        node = helper.make_node(op, ["x", "w", "x_zero", "w_zero"], ["y"], **attributes)
        out = TensorProto.INT32
    else:
        inits += [numpy_helper.from_array(np.float32(0.02), "x_scale"),
                  numpy_helper.from_array((rng.random(6) * 0.01 + 0.002).astype(np.float32), "w_scale"),
                  numpy_helper.from_array(np.float32(0.5), "y_scale"), numpy_helper.from_array(np.uint8(100), "y_zero"),
                  numpy_helper.from_array(rng.integers(-2000, 2000, size=6).astype(np.int32), "bias")]
        node = helper.make_node(op, ["x", "x_scale", "x_zero", "w", "w_scale", "w_zero", "y_scale", "y_zero", "bias"], ["y"], **attributes)
        out = TensorProto.UINT8
    graph = helper.make_graph([node], "conv", [helper.make_tensor_value_info("x", TensorProto.UINT8, [2, 4, 9, 7])],
                              [helper.make_tensor_value_info("y", out, None)], initializer=inits)
    model = work / "conv.onnx"
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)]), model)
    expected = ort_run(str(model), {"x": x})["y"]
    got = tessera_run(model, {"x": x}, work)["y"]
    assert got.dtype == expected.dtype and got.shape == expected.shape
    np.testing.assert_array_equal(got, expected)
