"""Quantized conversion, exported dequantized or as integer codes + DequantizeLinear."""
import os

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import helper, numpy_helper, TensorProto

from conftest import ROOT, same_bits, tessera

DIGITS = os.path.join(ROOT, "fixtures", "onnx", "digits_mlp.onnx")


def run(path, feeds):
    """onnxruntime with graph optimizations off: its default fuses int4 DequantizeLinear + MatMul
    into MatMulNBits, which computes at lower precision and so differs from the model's math."""
    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    return ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"]).run(None, feeds)


def digits():
    from make_fixtures import digits_split

    _, x_test, _, y_test = digits_split()
    return {"X": x_test}, y_test


@pytest.mark.parametrize("spec", [["--quantize", "int8"], ["--quantize", "int8", "--asymmetric"]])
def test_digits_int8_keeps_accuracy_and_keep_quantized_matches(spec, work):
    feeds, labels = digits()
    tess = work / "q.tess"
    tessera("convert", DIGITS, "-o", tess, *spec)
    tessera("export", tess, "-o", work / "dequantized.onnx")
    tessera("export", tess, "-o", work / "kept.onnx", "--keep-quantized")
    source_accuracy = (run(DIGITS, feeds)[0] == labels).mean()
    dequantized = run(work / "dequantized.onnx", feeds)
    assert abs((dequantized[0] == labels).mean() - source_accuracy) <= 0.005

    kept = onnx.load(work / "kept.onnx")
    onnx.checker.check_model(kept, full_check=True)
    dq = [n for n in kept.graph.node if n.op_type == "DequantizeLinear"]
    assert len(dq) == 2 and all(helper.get_attribute_value(a) == 1 for n in dq for a in n.attribute if a.name == "axis")
    codes = {t.name: t for t in kept.graph.initializer}
    expected_type = TensorProto.UINT8 if "--asymmetric" in spec else TensorProto.INT8
    assert codes["coefficient::quantized"].data_type == expected_type
    assert ("coefficient::zero_point" in codes) == ("--asymmetric" in spec)
    assert same_bits(run(work / "kept.onnx", feeds), dequantized)
    assert (work / "kept.onnx").stat().st_size < 0.5 * os.path.getsize(DIGITS)


def matmul_model(opset, k=64, n=16, seed=0):
    rng = np.random.default_rng(seed)
    w = numpy_helper.from_array(rng.normal(size=(k, n)).astype(np.float32), "w")
    graph = helper.make_graph([helper.make_node("MatMul", ["x", "w"], ["y"])], "mm",
                              [helper.make_tensor_value_info("x", TensorProto.FLOAT, [None, k])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [None, n])], initializer=[w])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)])
    model.ir_version = 10 if opset >= 21 else 8
    return model


@pytest.mark.parametrize("asymmetric", [False, True])
def test_int4_groups_keep_quantized_on_opset_21(asymmetric, work):
    source = work / "mm.onnx"
    onnx.save(matmul_model(21), source)
    tess = work / "mm.tess"
    tessera("convert", source, "-o", tess, "--quantize", "int4:group=16", *(["--asymmetric"] if asymmetric else []))
    tessera("export", tess, "-o", work / "dequantized.onnx")
    tessera("export", tess, "-o", work / "kept.onnx", "--keep-quantized")
    kept = onnx.load(work / "kept.onnx")
    node = kept.graph.node[0]
    assert node.op_type == "DequantizeLinear"
    assert {a.name: helper.get_attribute_value(a) for a in node.attribute} == {"axis": 0, "block_size": 16}
    scale = next(t for t in kept.graph.initializer if t.name == "w::scale")
    assert list(scale.dims) == [4, 16]  # ceil(64 / 16) blocks along K, one per output column
    feeds = {"x": np.random.default_rng(1).normal(size=(3, 64)).astype(np.float32)}
    assert same_bits(run(work / "kept.onnx", feeds), run(work / "dequantized.onnx", feeds))
    # ONNX's own DequantizeLinear of the kept codes gives exactly Tessera's dequantized weight.
    from onnx.reference import ReferenceEvaluator
    kept.graph.output.append(helper.make_tensor_value_info("w", TensorProto.FLOAT, None))
    onnx.save(kept, work / "kept_w.onnx")
    reference_w = ReferenceEvaluator(str(work / "kept_w.onnx")).run(None, feeds)[1]
    assert same_bits(reference_w, numpy_helper.to_array(onnx.load(work / "dequantized.onnx").graph.initializer[0]))
    w = numpy_helper.to_array(onnx.load(source).graph.initializer[0])
    w_hat = numpy_helper.to_array(onnx.load(work / "dequantized.onnx").graph.initializer[0])
    assert np.abs(w - w_hat).max() <= np.abs(w).max() / 7  # int4: within one step of the largest scale


def test_keep_quantized_refuses_an_opset_that_cannot_express_it(work):
    source = work / "mm.onnx"
    onnx.save(matmul_model(17), source)
    tess = work / "mm.tess"
    tessera("convert", source, "-o", tess, "--quantize", "int4:group=16")
    result = tessera("export", tess, "-o", work / "kept.onnx", "--keep-quantized", check=False)
    assert result.returncode == 1 and "needs opset 21" in result.stderr and "imports opset 17" in result.stderr
    assert not (work / "kept.onnx").exists()


def test_bad_quantize_options_are_rejected(work):
    for args, needle in [(["--quantize", "int3"], "int8 or int4"), (["--asymmetric"], "--asymmetric needs --quantize"),
                         (["--quantize", "int8:group=0"], "group size '0' in 'int8:group=0' must be a whole number in 1...")]:
        result = tessera("convert", DIGITS, "-o", work / "x.tess", *args, check=False)
        assert result.returncode != 0 and needle in result.stderr, result.stderr
        assert not (work / "x.tess").exists()
