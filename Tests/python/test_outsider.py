"""Issue 19: what an outsider found, written from the spec or as a first-time user would try."""
import os
import struct

import numpy as np
import onnx
import pytest
import xxhash
from onnx import TensorProto, helper, numpy_helper

from conftest import ROOT, tessera
from test_hardening import craft


def quantized_entry(granularity, axis, group_size, scales_buffer, values_buffer, dims=(4,)):
    """A float tensor with int8 codes (spec 5.2's QuantizationParams written field by field)."""
    name = b"w"
    return (struct.pack("<I", len(name)) + name + struct.pack("<IIIiI", 1, 0, 0, -1, len(dims))
            + b"".join(struct.pack("<Q", d) for d in dims)
            + struct.pack("<IIIIiQII", 1, 3, 1, granularity, axis, group_size, scales_buffer, 0xFFFFFFFF)
            + struct.pack("<I", values_buffer))


def buffer(data):
    return (data, 0, len(data), xxhash.xxh3_64_intdigest(data))


@pytest.mark.parametrize("granularity, axis, group_size, scales, valid", [
    (0, -1, 0, 1, True), (1, 0, 0, 4, True), (2, 0, 2, 2, True),
    (1, 0, 2, 4, False),    # per-axis with a group size
    (0, -1, 2, 1, False),   # per-tensor with a group size
    (0, 0, 0, 1, False),    # per-tensor with an axis
    (2, 0, 0, 4, False),    # per-group without a group size
])
def test_granularity_axis_and_group_size_follow_one_rule(granularity, axis, group_size, scales, valid, work):
    path = work / "q.tess"
    path.write_bytes(craft([buffer(bytes([1, 2, 3, 4])), buffer(struct.pack(f"<{scales}f", *[0.5] * scales))],
                           [quantized_entry(granularity, axis, group_size, 1, 0)]))
    result = tessera("verify", path, check=False)
    if valid:
        assert result.returncode == 0, result.stderr
    else:
        assert result.returncode == 1 and f"granularity {granularity} with axis {axis} and group size {group_size} is not valid" in result.stderr, result.stderr


def test_nan_and_inf_in_a_weight_are_never_quantized_silently(work):
    w = np.random.default_rng(0).normal(size=(64, 32)).astype(np.float32)
    w[3, 4], w[10, 1], w[0, 0] = np.nan, np.inf, -np.inf
    graph = helper.make_graph([helper.make_node("MatMul", ["X", "W"], ["y"])], "g",
                              [helper.make_tensor_value_info("X", TensorProto.FLOAT, [1, 64])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 32])], [numpy_helper.from_array(w, "W")])
    model = work / "nan.onnx"
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), model)
    for spec in ("int8", "int4:group=32"):
        result = tessera("convert", model, "-o", work / "q.tess", "--quantize", spec, "--minimum-elements", "1", check=False)
        assert result.returncode == 1, result.stderr
        assert "cannot quantize tensor 'W': it holds 3 NaN or infinite value(s)" in result.stderr and '"skip": true' in result.stderr
        assert not (work / "q.tess").exists()
    tessera("convert", model, "-o", work / "lossless.tess")   # stored exactly, NaN and all


@pytest.mark.parametrize("linear", [False, True], ids=["coordinate_indices", "linear_indices"])
def test_sparse_initializers_round_trip_exactly_with_explicit_zeros_in_any_order(linear, work):
    from conftest import normalized_bytes
    import json
    positions = [[63, 63], [0, 1], [5, 5], [2, 0]]   # unsorted, as ONNX's checker tolerates
    values = np.array([3.0, 1.5, 0.0, -0.0], np.float32)   # two explicit zeros
    if linear:
        indices = numpy_helper.from_array(np.ravel_multi_index(np.array(positions).T, [64, 64]).astype(np.int64), "m_indices")
    else:
        indices = numpy_helper.from_array(np.array(positions, np.int64), "m_indices")
    sparse = helper.make_sparse_tensor(numpy_helper.from_array(values, "m"), indices, [64, 64])
    graph = helper.make_graph([], "g", [], [helper.make_tensor_value_info("m", TensorProto.FLOAT, None)], sparse_initializer=[sparse])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    source, tess, back = work / "s.onnx", work / "s.tess", work / "back.onnx"
    onnx.save(model, source)
    tessera("convert", source, "-o", tess, "--report", work / "r.json")
    assert json.loads((work / "r.json").read_text())["tensors"][0]["fidelity"]["bit_exact"]
    tessera("export", tess, "-o", back)
    assert normalized_bytes(onnx.load(back)) == normalized_bytes(model)   # values, indices and their order
    exported = onnx.load(back).graph.sparse_initializer[0]
    assert numpy_helper.to_array(exported.values).tobytes() == values.tobytes()   # -0.0 keeps its sign bit
    result = tessera("verify", tess, "--source", source)
    assert "verdict: OK" in result.stdout


def test_repeated_sparse_indices_are_refused(work):
    indices = numpy_helper.from_array(np.array([3, 1, 3], np.int64), "m_indices")
    sparse = helper.make_sparse_tensor(numpy_helper.from_array(np.ones(3, np.float32), "m"), indices, [8])
    graph = helper.make_graph([], "g", [], [helper.make_tensor_value_info("m", TensorProto.FLOAT, None)], sparse_initializer=[sparse])
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), work / "s.onnx")
    result = tessera("convert", work / "s.onnx", "-o", work / "s.tess", check=False)
    assert result.returncode == 1 and "COO index 3 is out of range, repeated or not increasing" in result.stderr


def test_a_negative_zero_scale_is_valid_and_zeroes_its_group(work):
    path = work / "z.tess"
    path.write_bytes(craft([buffer(bytes([1, 2, 3, 4])), buffer(struct.pack("<f", -0.0))], [quantized_entry(0, -1, 0, 1, 0)]))
    assert tessera("verify", path).returncode == 0
    exported = tessera("export", path, "-o", work / "z.onnx", check=False)
    assert exported.returncode == 1 and "no ONNX graph section" in exported.stderr   # a bare file: nothing to export


def test_top1_is_reported_only_for_class_scores_and_labels(work):
    import json
    w = np.random.default_rng(3).normal(size=(8, 4)).astype(np.float32)
    nodes = [helper.make_node("MatMul", ["X", "W"], ["embedding"]), helper.make_node("Softmax", ["embedding"], ["probabilities"]),
             helper.make_node("ArgMax", ["embedding"], ["label"], axis=1, keepdims=0)]
    graph = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("X", TensorProto.FLOAT, ["N", 8])],
                              [helper.make_tensor_value_info(n, t, None) for n, t in
                               (("embedding", TensorProto.FLOAT), ("probabilities", TensorProto.FLOAT), ("label", TensorProto.INT64))],
                              [numpy_helper.from_array(w, "W")])
    # A second copy whose embedding is read by nothing that marks it: a plain vector output.
    plain = helper.make_graph(nodes[:1], "g", graph.input, [graph.output[0]], [numpy_helper.from_array(w, "W")])
    for g, name in ((graph, "classes"), (plain, "plain")):
        onnx.save(helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)]), work / f"{name}.onnx")
        tessera("convert", work / f"{name}.onnx", "-o", work / f"{name}.tess", "--quantize", "int8", "--minimum-elements", "1")
    report = json.loads(tessera("verify", work / "classes.tess", "--source", work / "classes.onnx", "--json").stdout)
    outputs = {o["name"]: o for o in report["end_to_end"]["outputs"]}
    assert outputs["probabilities"]["class_scores"] and outputs["probabilities"]["top1_agreement"] is not None
    assert outputs["embedding"]["class_scores"]   # read by ArgMax
    assert outputs["label"]["top1_agreement"] is not None and not outputs["label"]["class_scores"]   # labels: equality
    plain_run = tessera("verify", work / "plain.tess", "--source", work / "plain.onnx", "--min-top1", "0.5", check=False)
    assert plain_run.returncode == 1 and "--min-top1: no output holds class scores or labels" in plain_run.stderr
    table = tessera("verify", work / "plain.tess", "--source", work / "plain.onnx").stdout
    assert [line.split()[-1] for line in table.splitlines() if line.startswith("embedding")] == ["-"]
    named = json.loads(tessera("verify", work / "plain.tess", "--source", work / "plain.onnx", "--class-output", "embedding",
                               "--min-top1", "0.5", "--json").stdout)
    assert named["end_to_end"]["outputs"][0]["top1_agreement"] is not None


def test_metadata_holds_no_sizes_that_are_always_zero(work):
    import json
    source = os.path.join(ROOT, "fixtures", "onnx", "digits_mlp.onnx")
    tessera("convert", source, "-o", work / "d.tess")
    metadata = json.loads(tessera("inspect", work / "d.tess", "--json").stdout)["metadata"]
    assert "file_bytes" not in metadata["conversion"] and "source_file_bytes" not in metadata["conversion"]
    assert metadata["source"]["bytes"] == os.path.getsize(source)
    assert metadata["conversion"]["bytes_before"] > 0 and metadata["conversion"]["tensor_count"] == 8


def test_wildcard_rules_apply_where_they_can_and_exact_rules_must_apply(work):
    import json
    rng = np.random.default_rng(5)
    bad = rng.normal(size=(16, 8)).astype(np.float32)
    bad[0, 0] = np.nan
    inits = [numpy_helper.from_array(rng.normal(size=(16, 8)).astype(np.float32), "layer.2.w"),
             numpy_helper.from_array(np.array([1, -1], np.int64), "layer.2.shape"),
             numpy_helper.from_array(bad, "layer.2.nan")]
    nodes = [helper.make_node("MatMul", ["X", "layer.2.w"], ["h"]), helper.make_node("MatMul", ["X", "layer.2.nan"], ["g"]),
             helper.make_node("Add", ["h", "g"], ["s"]), helper.make_node("Reshape", ["s", "layer.2.shape"], ["y"])]
    graph = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("X", TensorProto.FLOAT, [1, 16])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)], inits)
    model = work / "m.onnx"
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), model)
    recipe = work / "r.json"
    recipe.write_text(json.dumps({"rules": [{"match": "*layer.2*", "quantize": "int8"}]}))
    tessera("convert", model, "-o", work / "q.tess", "--recipe", recipe, "--report", work / "report.json")
    rows = {t["name"]: t for t in json.loads((work / "report.json").read_text())["tensors"]}
    assert rows["layer.2.w"]["quantization"] is not None
    assert rows["layer.2.shape"].get("quantization") is None and "not quantized: it is int64" in rows["layer.2.shape"]["reason"]
    assert rows["layer.2.nan"].get("quantization") is None and "not quantized: it holds 1 NaN" in rows["layer.2.nan"]["reason"]
    for name, needle in (("layer.2.shape", "cannot quantize tensor 'layer.2.shape': it is int64"),
                         ("layer.2.nan", "cannot quantize tensor 'layer.2.nan': it holds 1 NaN")):
        recipe.write_text(json.dumps({"rules": [{"match": name, "quantize": "int8"}]}))
        result = tessera("convert", model, "-o", work / "exact.tess", "--recipe", recipe, check=False)
        assert result.returncode == 1 and needle in result.stderr, result.stderr
        assert not (work / "exact.tess").exists()
    recipe.write_text(json.dumps({"rules": [{"match": "layer.2.w", "prune": "2:4"}]}))   # 2:4 along K = 16: fine
    tessera("convert", model, "-o", work / "p.tess", "--recipe", recipe)
    recipe.write_text(json.dumps({"rules": [{"match": "layer.2.shape", "prune": "2:4"}]}))
    result = tessera("convert", model, "-o", work / "p2.tess", "--recipe", recipe, check=False)
    assert result.returncode == 1 and "cannot prune tensor 'layer.2.shape' as its rule asks" in result.stderr


def test_quantize_also_quantizes_embedding_tables_per_row_unless_told_not_to(work):
    import json
    rng = np.random.default_rng(7)
    table = rng.normal(size=(200, 16)).astype(np.float32)
    graph = helper.make_graph([helper.make_node("Gather", ["table", "ids"], ["y"])], "g",
                              [helper.make_tensor_value_info("ids", TensorProto.INT64, [1, 5])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 5, 16])], [numpy_helper.from_array(table, "table")])
    model = work / "emb.onnx"
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), model)

    def row(*flags):
        tessera("convert", model, "-o", work / "e.tess", "--force", "--report", work / "r.json", "--quantize", "int8", *flags)
        return json.loads((work / "r.json").read_text())["tensors"][0]

    assert row()["quantization"] == "int8 per-axis(0) f32"   # one scale per row, as quantize_dynamic does
    assert row("--no-quantize-embeddings").get("quantization") is None
    recipe = work / "r.recipe.json"
    recipe.write_text(json.dumps({"quantize": "int8", "quantize_embeddings": False}))
    tessera("convert", model, "-o", work / "e.tess", "--force", "--report", work / "r.json", "--recipe", recipe)
    assert json.loads((work / "r.json").read_text())["tensors"][0].get("quantization") is None
    np.save(work / "ids.npy", np.array([[0, 5, 199, 7, 7]], np.int64))
    tessera("convert", model, "-o", work / "q.tess", "--force", "--quantize", "int8")
    out = tessera("verify", work / "q.tess", "--source", model, "--input", f"ids={work / 'ids.npy'}", "--min-output-cosine", "0.999")
    assert "verdict: OK" in out.stdout


@pytest.mark.parametrize("model", ["digits_mlp", "digits_mlp_pruned", "minilm"])
def test_a_lossless_conversion_is_never_larger_than_its_source(model, work):
    """Item 9: the distribution form compresses the metadata and graph sections (format 1.1)."""
    from spec_reader import TessFile
    from test_onnx_roundtrip import minilm_path
    source = minilm_path() if model == "minilm" else os.path.join(ROOT, "fixtures", "onnx", model + ".onnx")
    tessera("convert", source, "-o", work / "m.tess", "--quiet")
    assert os.path.getsize(work / "m.tess") <= os.path.getsize(source)
    packed = TessFile(str(work / "m.tess"))
    assert packed.version == (1, 1) and packed.metadata["producer"] == "tessera"
    # The zero-copy form stores its sections plain: a file any 1.0 reader reads.
    tessera("unpack", work / "m.tess", "-o", work / "u.tess")
    unpacked = TessFile(str(work / "u.tess"))
    assert unpacked.version == (1, 0) and unpacked.sections == packed.sections
