"""tessera convert as a data-science team's model meets it: sparsity detection, pruning along
the right axis, recipes and the report."""
import json
import os

import numpy as np
import onnx
import onnxruntime as ort
from onnx import helper, numpy_helper, TensorProto

from conftest import ROOT, normalized_bytes, same_bits, tessera


def prune24(w, axis):
    """Keep the two largest magnitudes in every group of four along `axis` (as NVIDIA ASP does)."""
    moved = np.moveaxis(w, axis, -1).copy()
    groups = moved.reshape(-1, 4)
    order = np.argsort(-np.abs(groups), axis=1, kind="stable")
    np.put_along_axis(groups, order[:, 2:], 0, axis=1)
    return np.moveaxis(groups.reshape(moved.shape), -1, axis)


def is24(w, axis):
    return bool(((np.moveaxis(w, axis, -1).reshape(-1, 4) != 0).sum(axis=1) <= 2).all())


def asp_model(rng):
    """A model whose weights were pruned 2:4 by their trainers: MatMul [K, N] along K, Gemm
    with transB=1 [N, K] along K, Conv [Cout, Cin, kh, kw] along Cin."""
    mm = prune24(rng.normal(size=(64, 32)).astype(np.float32), 0)
    gemm = prune24(rng.normal(size=(16, 32)).astype(np.float32), 1)
    conv = prune24(rng.normal(size=(8, 16, 3, 3)).astype(np.float32), 1)
    nodes = [
        helper.make_node("MatMul", ["x", "mm"], ["h"]),
        helper.make_node("Gemm", ["h", "gemm"], ["y"], transB=1),
        helper.make_node("Conv", ["img", "conv"], ["z"], pads=[1, 1, 1, 1]),
    ]
    graph = helper.make_graph(
        nodes, "asp",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [None, 64]),
         helper.make_tensor_value_info("img", TensorProto.FLOAT, [None, 16, 8, 8])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, None), helper.make_tensor_value_info("z", TensorProto.FLOAT, None)],
        initializer=[numpy_helper.from_array(mm, "mm"), numpy_helper.from_array(gemm, "gemm"), numpy_helper.from_array(conv, "conv")])
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])


def tensors_of(tess):
    return {t["name"]: t for t in json.loads(tessera("inspect", "--json", tess).stdout)["tensors"]}


def test_a_model_already_pruned_24_is_stored_as_sparse24_losslessly(work):
    model = asp_model(np.random.default_rng(0))
    source = work / "asp.onnx"
    onnx.save(model, source)
    tess = work / "asp.tess"
    tessera("convert", source, "-o", tess)  # no --prune: the sparsity is detected
    tensors = tensors_of(tess)
    assert all(tensors[n]["layout"] == "sparse24" for n in ("mm", "gemm", "conv"))
    assert (tensors["mm"]["reduction_axis"], tensors["gemm"]["reduction_axis"], tensors["conv"]["reduction_axis"]) == (0, 1, 1)
    report = {t["name"]: t for t in json.loads(tessera("inspect", "--json", tess).stdout)["metadata"]["conversion"]["tensors"]}
    assert all(report[n]["source_satisfies_2_4"] for n in ("mm", "gemm", "conv"))
    mm = numpy_helper.to_array(model.graph.initializer[0])
    lo, median, hi = report["mm"]["channel_absmax_min_median_max"]
    per_column = np.abs(mm).max(axis=0)  # MatMul [K, N]: output channels are columns
    assert np.isclose([lo, hi], [per_column.min(), per_column.max()]).all()
    tessera("export", tess, "-o", work / "back.onnx")
    assert normalized_bytes(onnx.load(work / "back.onnx")) == normalized_bytes(model)


def test_pruning_follows_each_weights_reduction_axis(work):
    rng = np.random.default_rng(1)
    model = asp_model(rng)
    for t in model.graph.initializer:  # make them dense again
        t.CopyFrom(numpy_helper.from_array(rng.normal(size=tuple(t.dims)).astype(np.float32), t.name))
    source = work / "dense.onnx"
    onnx.save(model, source)
    tess = work / "p.tess"
    tessera("convert", source, "-o", tess, "--prune", "2:4", "--minimum-elements", "1")
    tessera("export", tess, "-o", work / "p.onnx")
    before = {t.name: numpy_helper.to_array(t) for t in model.graph.initializer}
    after = {t.name: numpy_helper.to_array(t) for t in onnx.load(work / "p.onnx").graph.initializer}
    for name, axis in [("mm", 0), ("gemm", 1), ("conv", 1)]:
        assert is24(after[name], axis), name
        assert np.array_equal(after[name], prune24(before[name], axis)), f"{name}: kept values are the two largest"
    feeds = {"x": rng.normal(size=(2, 64)).astype(np.float32), "img": rng.normal(size=(1, 16, 8, 8)).astype(np.float32)}
    ort.InferenceSession(str(work / "p.onnx"), providers=["CPUExecutionProvider"]).run(None, feeds)


def test_an_iteratively_pruned_model_is_detected_and_stored_as_csr(work):
    source = os.path.join(ROOT, "fixtures", "onnx", "digits_mlp_pruned.onnx")
    tess = work / "pruned.tess"
    tessera("convert", source, "-o", tess)
    tensors = tensors_of(tess)
    for name in ("coefficient", "coefficient1", "coefficient2"):
        assert tensors[name]["layout"] == "csr" and tensors[name]["sparsity"] > 0.9
    tessera("export", tess, "-o", work / "back.onnx")
    assert normalized_bytes(onnx.load(work / "back.onnx")) == normalized_bytes(onnx.load(source))


def test_the_report_is_printed_written_and_embedded(work):
    source = os.path.join(ROOT, "fixtures", "onnx", "digits_mlp.onnx")
    tess, report = work / "q.tess", work / "report.json"
    out = tessera("convert", source, "-o", tess, "--quantize", "int8", "--minimum-elements", "256", "--report", report).stdout
    assert "coefficient" in out and "int8 per-axis(1)" in out and "file " in out
    written = json.loads(report.read_text())
    embedded = json.loads(tessera("inspect", "--json", tess).stdout)["metadata"]["conversion"]
    # The file keeps the weights' and the changed tensors' lines, and the totals.
    kept = [t for t in written["tensors"] if t["role"] != "-" or not t["fidelity"]["bit_exact"]]
    assert embedded["tensors"] == kept and "coefficient" in [t["name"] for t in kept]
    assert "intercepts" not in [t["name"] for t in kept]   # a bias, stored exactly: its line says nothing new
    changed = sum(not t["fidelity"]["bit_exact"] for t in written["tensors"])
    assert embedded["tensor_count"] == len(written["tensors"]) and embedded["changed"] == changed > 0 and embedded["omitted"] == 0
    assert embedded["bytes_before"] == sum(t["bytes_before"] for t in written["tensors"])
    rows = {t["name"]: t for t in written["tensors"]}
    w = rows["coefficient"]
    assert w["quantization"] == "int8 per-axis(1) f32" and 0.999 < w["fidelity"]["cosine"] <= 1
    assert w["fidelity"]["snr_db"] > 30 and not w["fidelity"]["bit_exact"]
    assert rows["intercepts"]["fidelity"]["bit_exact"] and rows["intercepts"].get("quantization") is None
    assert written["recipe"]["quantize"] == "int8" and written["file_bytes"] == os.path.getsize(tess)


def test_recipes_apply_per_tensor_rules(work):
    source = os.path.join(ROOT, "fixtures", "onnx", "digits_mlp.onnx")
    recipe = work / "recipe.json"
    recipe.write_text(json.dumps({"quantize": "int8", "minimum_elements": 256, "rules": [
        {"match": "coefficient1", "skip": True},
        {"match": "coefficient2", "quantize": "int4:group=8", "asymmetric": True},
    ]}))
    tess = work / "r.tess"
    tessera("convert", source, "-o", tess, "--recipe", recipe, "--quiet")
    tensors = tensors_of(tess)
    assert tensors["coefficient"]["quantization"] == "int8 per-axis(1) f32"
    assert "quantization" not in tensors["coefficient1"]
    assert tensors["coefficient2"]["quantization"] == "uint4 group(0,8) f32 +zp"
    stored = json.loads(tessera("inspect", "--json", tess).stdout)["metadata"]["conversion"]["recipe"]
    assert stored["rules"][0] == {"match": "coefficient1", "skip": True}


def test_conversion_errors_are_one_line(work):
    source = os.path.join(ROOT, "fixtures", "onnx", "digits_mlp.onnx")
    bad = work / "bad.json"
    bad.write_text('{"rules": [{"match": "*", "prune": "3:4"}]}')
    cases = [
        (["--recipe", work / "missing.json"], "cannot read the recipe"),
        (["--recipe", bad], "--prune must be 2:4"),
        (["--prune", "2:8"], "--prune must be 2:4"),
        (["--layout", "coo"], "layout must be one of"),
        (["--layout", "sparse24"], "cannot be stored as sparse24"),
    ]
    for args, needle in cases:
        result = tessera("convert", source, "-o", work / "x.tess", *args, check=False)
        assert result.returncode != 0 and needle in result.stderr, (args, result.stderr)
        assert not (work / "x.tess").exists()


def test_minilm_2to4_int8_recipe_is_at_most_016x_of_the_source(work):
    from test_onnx_roundtrip import minilm_path

    source = minilm_path()
    tess = work / "m.tess"
    tessera("convert", source, "-o", tess, "--quiet", "--recipe", os.path.join(ROOT, "recipes", "minilm-2to4-int8.json"))
    assert os.path.getsize(tess) <= 0.16 * os.path.getsize(source)
    tensors = tensors_of(tess)
    gemm = [t for t in tensors.values() if t["role"] == "matmul.B" and t["shape"][0] % 4 == 0]
    assert gemm and all(t["layout"] == "sparse24" and t["quantization"].startswith("int8") for t in gemm)
