"""Issue 20's attacks, each written as what an attacker or a careless user does: a crafted file
or a command. Every refusal must be clean: exit 1, one `tessera: error:` line naming what and
where, no output and no temporary file left, every existing file unchanged, and bounded time
and memory (the memory attacks run under an address-space limit)."""
import os
import resource
import signal
import stat
import struct
import subprocess
import time

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from conftest import ROOT, normalized_bytes, tessera, tessera_binary
from test_hardening import craft, dense_entry, peak_rss_of

DIGITS = os.path.join(ROOT, "fixtures", "onnx", "digits_mlp.onnx")
GIB = 1 << 30


def run_limited(args, memory=None, timeout=60, cwd=None):
    """Run the tool with an address-space limit (bytes) and a time limit. Under AddressSanitizer
    (TESSERA_SANITIZED set), whose shadow memory needs terabytes of address space, without the
    limit: the default budget still refuses every attack here."""
    def limit():
        if memory and not os.environ.get("TESSERA_SANITIZED"):
            resource.setrlimit(resource.RLIMIT_AS, (memory, memory))
    return subprocess.run([tessera_binary(), *map(str, args)], capture_output=True, text=True,
                          preexec_fn=limit, timeout=timeout, cwd=cwd)


def snapshot(folder):
    return {p.name: p.read_bytes() if p.is_file() and not p.is_symlink() else stat.S_IFMT(p.lstat().st_mode)
            for p in folder.iterdir()}


def refused(folder, args, needle, memory=GIB, timeout=60):
    """The command fails cleanly and leaves `folder` exactly as it was."""
    before = snapshot(folder)
    result = run_limited(args, memory=memory, timeout=timeout)
    lines = result.stderr.splitlines()
    assert result.returncode == 1, (result.returncode, result.stderr[-2000:])
    assert len(lines) == 1 and lines[0].startswith("tessera: error: "), result.stderr[-2000:]
    assert needle in lines[0], lines[0]
    assert snapshot(folder) == before, "files changed, appeared or were left behind"
    return lines[0]


# -- 1. --report and every other output: one writer, never over an input ---------------------

def test_report_naming_the_source_model_is_refused(work):
    model = work / "model.onnx"
    model.write_bytes(open(DIGITS, "rb").read())
    refused(work, ["convert", model, "-o", work / "m.tess", "--report", model], "is an input of this command")
    refused(work, ["convert", model, "-o", work / "m.tess", "--report", model, "--force"], "is an input of this command")


def test_report_naming_the_output_is_refused(work):
    model = work / "model.onnx"
    model.write_bytes(open(DIGITS, "rb").read())
    refused(work, ["convert", model, "-o", work / "m.tess", "--report", work / "m.tess", "--force"],
            "is named as two outputs of the same command")


def test_an_unwritable_report_leaves_no_tess_file(work):
    model = work / "model.onnx"
    model.write_bytes(open(DIGITS, "rb").read())
    refused(work, ["convert", model, "-o", work / "m.tess", "--report", work / "missing" / "r.json"],
            "cannot create a temporary file")


def test_an_existing_report_is_kept_without_force(work):
    model = work / "model.onnx"
    model.write_bytes(open(DIGITS, "rb").read())
    (work / "r.json").write_text("mine")
    refused(work, ["convert", model, "-o", work / "m.tess", "--report", work / "r.json"], "already exists")


@pytest.mark.parametrize("command", ["pack", "unpack", "export", "run"])
def test_an_output_that_is_the_input_is_refused(command, work):
    tess = work / "m.tess"
    tessera("convert", DIGITS, "-o", tess)
    if command == "run":   # run writes only .npz files: a model file may be named so
        np.save(work / "x.npy", np.zeros((1, 64), np.float32))
        os.rename(tess, work / "model.npz")
        refused(work, ["run", work / "model.npz", "--input", f"X={work / 'x.npy'}", "-o", work / "model.npz", "--force"],
                "is an input of this command")
    else:
        refused(work, [command, tess, "-o", tess, "--force"], "is an input of this command")


# -- 2. nesting: no stack overflow, wherever the malformed bytes are ---------------------------

def varint(n):
    out = b""
    while True:
        byte, n = n & 0x7F, n >> 7
        out += bytes([byte | (0x80 if n else 0)])
        if not n:
            return out


def field(number, payload):
    return varint(number << 3 | 2) + varint(len(payload)) + payload


def deep_if_graph(depth, truncated_tail):
    """GraphProto bytes: an If whose then_branch holds an If ... `depth` deep, written by hand
    (the Python protobuf refuses such depth). With `truncated_tail`, one more node follows the
    chain in the outer graph: whole at that level, but its op_type runs past the node's end, so
    only a parser that looks inside it after descending the chain finds the damage."""
    graph = b""
    for _ in range(depth):
        attribute = field(1, b"then_branch") + field(6, graph) + varint(20 << 3) + varint(5)
        graph = field(1, field(4, b"If") + field(5, attribute))
    if truncated_tail:
        graph += field(1, varint(4 << 3 | 2) + varint(200) + b"If")
    return graph


def deep_if_model(depth=3000, truncated_tail=True):
    return varint(1 << 3) + varint(8) + field(8, field(1, b"") + varint(2 << 3) + varint(17)) + field(7, deep_if_graph(depth, truncated_tail))


@pytest.mark.parametrize("truncated", [True, False])
def test_a_deep_if_chain_is_refused_not_a_stack_overflow(truncated, work):
    model = work / "deep.onnx"
    model.write_bytes(deep_if_model(truncated_tail=truncated))
    assert 60_000 < model.stat().st_size < 200_000
    tess = work / "digits.tess"
    tessera("convert", DIGITS, "-o", tess)
    needle = "truncated or corrupt" if truncated else "nested more than 100 deep"
    refused(work, ["convert", model, "-o", work / "out.tess"], needle)
    refused(work, ["run", model], needle)
    refused(work, ["verify", tess, "--source", model], needle)


@pytest.mark.parametrize("truncated", [True, False])
def test_a_deep_graph_section_fails_verify_run_and_export(truncated, work):
    payload = deep_if_model(truncated_tail=truncated)
    path = work / "deep.tess"
    path.write_bytes(craft([], [], sections=struct.pack("<IIQ", 2, 0, len(payload)) + payload, section_count=1))
    needle = "truncated or corrupt" if truncated else "nested more than 100 deep"
    refused(work, ["verify", path], needle)
    refused(work, ["run", path], needle)
    refused(work, ["export", path, "-o", work / "out.onnx"], needle)


def test_verify_resolves_the_graph_sections_tensor_references(work):
    model = helper.make_model(helper.make_graph(
        [helper.make_node("Identity", ["w"], ["y"])], "g", [], [helper.make_tensor_value_info("y", TensorProto.FLOAT, [2])],
        [numpy_helper.from_array(np.ones(2, np.float32), "w")]))
    t = model.graph.initializer[0]
    t.ClearField("raw_data")
    t.data_location = TensorProto.EXTERNAL
    t.external_data.add(key="tessera.tensor", value="absent")
    graph = model.SerializeToString()
    path = work / "ref.tess"
    path.write_bytes(craft([], [], sections=struct.pack("<IIQ", 2, 0, len(graph)) + graph, section_count=1))
    refused(work, ["verify", path], "refers to tensor 'absent', which the file does not hold")


# -- 3. zstd bombs: memory bounded by what the user controls ---------------------------------

def corrupt_frame(content_size, stored):
    """A zstd frame declaring `content_size` bytes, `stored` bytes long, whose compressed blocks
    are garbage: structurally a frame, corrupt at its first block."""
    frame = bytes([0x28, 0xB5, 0x2F, 0xFD, 0xE0]) + struct.pack("<Q", content_size)
    while len(frame) < stored:
        block = min(65536, stored - len(frame) - 3)
        last = len(frame) + 3 + block == stored
        frame += (last | 2 << 1 | block << 3).to_bytes(3, "little") + b"\xff" * block
    return frame


def bomb(work, declared, stored):
    path = work / "bomb.tess"
    path.write_bytes(craft([(corrupt_frame(declared, stored), 1, declared, 0)], [dense_entry("w", 2, [declared], 0)]))
    return path


@pytest.mark.parametrize("command", ["inspect", "verify", "unpack"])
def test_a_4_gib_claim_corrupt_at_its_first_block_costs_a_block(command, work):
    path = bomb(work, 4 * GIB, 131_100)
    assert path.stat().st_size < 140_000
    args = [command, path] + (["-o", work / "out.tess"] if command == "unpack" else [])
    _, baseline, _ = peak_rss_of([tessera_binary(), "verify", os.path.join(ROOT, "fixtures", "golden", "tiny.tess")])
    status, rss, stderr = peak_rss_of([tessera_binary(), *args])
    assert status == 1 and "zstd decompress failed" in stderr, stderr
    assert rss < baseline + 16 * 2**20, f"peak RSS {rss} against {baseline}: the declared size was allocated"
    assert not (work / "out.tess").exists()


@pytest.mark.parametrize("command", ["inspect", "verify", "unpack"])
def test_claims_over_the_memory_budget_are_refused_before_allocating(command, work):
    path = bomb(work, 64 * GIB, 2 * 2**20 + 100)   # within zstd's expansion bound
    args = [command, path] + (["-o", work / "out.tess"] if command == "unpack" else [])
    refused(work, args, "over the memory budget", memory=GIB)   # default budget: half of the limit
    refused(work, args, "over the memory budget", memory=None)  # half of physical memory
    small = bomb(work, 4 * GIB, 131_100)
    args = [command, small, "--max-memory", "100M"] + (["-o", work / "out.tess"] if command == "unpack" else [])
    assert "of 104857600 bytes" in refused(work, args, "over the memory budget", memory=None)


def test_a_bad_memory_budget_is_a_usage_error(work):
    result = tessera("inspect", os.path.join(ROOT, "fixtures", "golden", "tiny.tess"), "--max-memory", "lots", check=False)
    assert result.returncode == 64 and "--max-memory must be a size such as 512M" in result.stderr


# -- 4. counts from files go through checked geometry -------------------------------------------

def sparse_initializer_model(nnz):
    values = TensorProto(name="s", data_type=TensorProto.FLOAT, dims=[nnz])
    indices = TensorProto(name="s_indices", data_type=TensorProto.INT64, dims=[nnz])
    sparse = helper.make_sparse_tensor(values, indices, [4])
    graph = helper.make_graph([helper.make_node("Identity", ["s"], ["y"])], "g", [],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [4])], sparse_initializer=[sparse])
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])


def test_a_sparse_initializer_of_2_62_values_is_refused(work):
    model = work / "sparse.onnx"
    onnx.save(sparse_initializer_model(2**62), model)
    tess = work / "digits.tess"
    tessera("convert", DIGITS, "-o", tess)
    for args in (["convert", model, "-o", work / "out.tess"], ["run", model], ["verify", tess, "--source", model]):
        refused(work, args, "has more than 281474976710656 elements")


# -- 5. hostile graphs: every output size checked before it is allocated -----------------------

def const(name, values, dtype=np.int64):
    return helper.make_node("Constant", [], [name], value=numpy_helper.from_array(np.array(values, dtype), name + "_v"))


def graph_model(nodes, output_type=TensorProto.FLOAT, inputs=()):
    graph = helper.make_graph(nodes, "hostile", list(inputs), [helper.make_tensor_value_info("y", output_type, None)])
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])


HOSTILE_GRAPHS = {
    "ConstantOfShape [2^20, 2^20]": ([const("s", [2**20, 2**20]), helper.make_node("ConstantOfShape", ["s"], ["y"])],
                                     "over the memory budget"),
    "Expand to [2^40]": ([const("x", [1.0], np.float32), const("s", [2**40]), helper.make_node("Expand", ["x", "s"], ["y"])],
                         "over the memory budget"),
    "Range 0..2^40": ([const("a", 0), const("b", 2**40), const("d", 1), helper.make_node("Range", ["a", "b", "d"], ["y"])],
                      "over the memory budget"),
    "Tile by 2^62": ([const("x", [[1.0, 2.0]], np.float32), const("r", [2**62, 2**62]), helper.make_node("Tile", ["x", "r"], ["y"])],
                     "Tile of [1, 2] by [4611686018427387904, 4611686018427387904] overflows"),
    "Reshape to [2^40, 2^40, -1]": ([const("x", [1.0, 2.0, 3.0, 4.0], np.float32), const("s", [2**40, 2**40, -1]),
                                     helper.make_node("Reshape", ["x", "s"], ["y"])], "cannot reshape [4]"),
    "MatMul to [2^20, 2^20]": ([const("s", [2**20, 1]), helper.make_node("ConstantOfShape", ["s"], ["a"],
                                value=numpy_helper.from_array(np.ones(1, np.float32))),
                                const("t", [1, 2**20]), helper.make_node("ConstantOfShape", ["t"], ["b"],
                                value=numpy_helper.from_array(np.ones(1, np.float32))),
                                helper.make_node("MatMul", ["a", "b"], ["y"])], "over the memory budget"),
}


@pytest.mark.parametrize("case", sorted(HOSTILE_GRAPHS))
def test_hostile_graphs_are_refused_naming_the_node(case, work):
    nodes, needle = HOSTILE_GRAPHS[case]
    model = work / "hostile.onnx"
    onnx.save(graph_model(nodes), model)
    tess = work / "hostile.tess"
    tessera("convert", model, "-o", tess)
    nodes[-1].name = "hostile"
    onnx.save(graph_model(nodes), model)
    tessera("convert", model, "-o", tess, "--force")
    for args in (["run", model], ["run", tess], ["verify", tess, "--source", model]):
        line = refused(work, args, needle, memory=GIB, timeout=120)
        assert line.startswith(f"tessera: error: node hostile ({nodes[-1].op_type}): "), line


def test_a_declared_input_of_4_tib_is_refused_before_generating_it(work):
    x = helper.make_tensor_value_info("X", TensorProto.FLOAT, [2**20, 2**20])   # 4 TiB of float32
    model = work / "huge.onnx"
    onnx.save(graph_model([helper.make_node("Relu", ["X"], ["y"])], inputs=[x]), model)
    tess = work / "huge.tess"
    tessera("convert", model, "-o", tess)
    refused(work, ["verify", tess, "--source", model], "generated input 'X' of shape [1048576, 1048576]", memory=GIB)


# -- 6. names are bytes: a NUL byte cannot make two names one ---------------------------------

def test_names_that_differ_after_a_nul_byte_are_refused(work):
    zero = numpy_helper.from_array(np.zeros(1, np.float32), "w\x00a")
    ninety_nine = numpy_helper.from_array(np.full(1, 99, np.float32), "w\x00b")
    graph = helper.make_graph([helper.make_node("Identity", ["w\x00b"], ["y"])], "g", [],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1])], [zero, ninety_nine])
    model = work / "nul.onnx"
    model.write_bytes(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]).SerializeToString())
    tess = work / "digits.tess"
    tessera("convert", DIGITS, "-o", tess)
    for args in (["convert", model, "-o", work / "out.tess"], ["run", model], ["verify", tess, "--source", model]):
        refused(work, args, "holds a NUL byte")


# -- 7. export: a model always reads its own external data -------------------------------------

def big_model(seed):
    w = np.random.default_rng(seed).normal(size=(400, 400)).astype(np.float32)
    graph = helper.make_graph([helper.make_node("MatMul", ["X", "W"], ["y"])], "g",
                              [helper.make_tensor_value_info("X", TensorProto.FLOAT, [1, 400])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 400])],
                              [numpy_helper.from_array(w, "W")])
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])


def test_a_killed_export_never_pairs_a_model_with_other_data(work):
    versions = {}
    for v in ("a", "b"):
        onnx.save(big_model(ord(v)), work / f"{v}.onnx")
        tessera("convert", work / f"{v}.onnx", "-o", work / f"{v}.tess")
        versions[v] = normalized_bytes(onnx.load(work / f"{v}.onnx"))
    out = work / "out" / "m.onnx"
    out.parent.mkdir()
    export = [tessera_binary(), "export", None, "-o", str(out), "--external-data-threshold", "1000", "--force"]
    subprocess.run([*export[:2], str(work / "a.tess"), *export[3:]], check=True, capture_output=True)
    start = time.monotonic()
    subprocess.run([*export[:2], str(work / "b.tess"), *export[3:]], check=True, capture_output=True)
    duration = time.monotonic() - start
    for k in range(12):
        source = "a" if k % 2 == 0 else "b"
        process = subprocess.Popen([*export[:2], str(work / f"{source}.tess"), *export[3:]],
                                   stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        time.sleep(duration * (k + 0.5) / 12)
        process.send_signal(signal.SIGKILL)
        process.wait()
        current = normalized_bytes(onnx.load(out))   # with its external data
        match = [v for v, expected in versions.items() if expected == current]
        assert match, f"kill {k}: the model under the final name reads data of another export"
    assert not [p.name for p in out.parent.iterdir() if ".tmp-" in p.name]
    subprocess.run([*export[:2], str(work / "b.tess"), *export[3:]], check=True, capture_output=True)
    data = sorted(p.name for p in out.parent.iterdir() if p.name.endswith(".data"))
    assert len(data) == 1, f"earlier exports' data files are removed: {data}"


# -- 10. special files: regular files only, never blocking --------------------------------------

def special_files(work):
    fifo = work / "fifo"
    os.mkfifo(fifo)
    link = work / "link.tess"
    (work / "target.tess").write_bytes(b"keep")
    link.symlink_to(work / "target.tess")
    found = {"a FIFO": fifo, "a symbolic link": link, "a folder": work / "folder"}
    (work / "folder").mkdir()
    if os.geteuid() == 0:
        os.mknod(work / "null", stat.S_IFCHR | 0o666, os.makedev(1, 3))
        found["a character device"] = work / "null"
    return found


def test_outputs_never_replace_special_files(work):
    tess = work / "m.tess"
    tessera("convert", DIGITS, "-o", tess)
    for kind, path in special_files(work).items():
        refused(work, ["pack", tess, "-o", path, "--force"], f"exists and is not a regular file ({kind})")
        refused(work, ["convert", DIGITS, "-o", work / "x.tess", "--report", path, "--force"], f"({kind})")
    assert (work / "target.tess").read_bytes() == b"keep"


def test_a_fifo_as_model_recipe_or_external_data_is_refused_without_blocking(work):
    os.mkfifo(work / "recipe.json")
    refused(work, ["convert", DIGITS, "-o", work / "out.tess", "--recipe", work / "recipe.json"], "is a FIFO, not a regular file", timeout=20)
    os.mkfifo(work / "model.onnx")
    refused(work, ["convert", work / "model.onnx", "-o", work / "out.tess"], "is a FIFO, not a regular file", timeout=20)
    refused(work, ["run", work / "model.onnx"], "is a FIFO, not a regular file", timeout=20)
    folder = work / "ext"
    folder.mkdir()
    model = big_model(1)
    onnx.save_model(model, folder / "m.onnx", save_as_external_data=True, all_tensors_to_one_file=True, location="w.bin",
                    size_threshold=0)
    os.unlink(folder / "w.bin")
    os.mkfifo(folder / "w.bin")
    refused(folder, ["convert", folder / "m.onnx", "-o", folder / "out.tess"], "is a FIFO, not a regular file", timeout=20)


# -- 11. terminal injection: names escaped in human output, exact in JSON ---------------------

def test_control_characters_in_names_never_reach_the_terminal(work):
    name = "w\x1b[31mRED\r\nforged line\x07"
    graph = helper.make_graph([helper.make_node("Identity", [name], ["y"])], "g", [],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [2])],
                              [numpy_helper.from_array(np.ones(2, np.float32), name)])
    model = work / "ansi.onnx"
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), model)
    tess = work / "ansi.tess"
    np.save(work / "x.npy", np.ones(2, np.float32))
    outputs = [tessera("convert", model, "-o", tess).stdout, tessera("inspect", tess).stdout,
               tessera("verify", tess, "--source", model).stdout,
               tessera("run", tess, "--input", f"{name}={work / 'x.npy'}", check=False).stderr]
    for text in outputs:
        assert not any(c in text for c in "\x1b\r\x07"), repr(text)
    assert "w\\u{1b}[31mRED\\r\\nforged line\\u{7}" in outputs[1]
    import json
    assert any(t["name"] == name for t in json.loads(tessera("inspect", tess, "--json").stdout)["tensors"])
    assert "is not an input of the graph" in outputs[3] and outputs[3].count("\n") == 1


# -- 12. scale: linear in the tensor count, bounded memory --------------------------------------

def many_constants(count, name):
    nodes = [helper.make_node("Constant", [], [f"v{i}"], value=numpy_helper.from_array(np.array([i % 7, 1], np.float32), name(i)))
             for i in range(count)]
    nodes.append(helper.make_node("Identity", ["v0"], ["y"]))
    graph = helper.make_graph(nodes, "g", [], [helper.make_tensor_value_info("y", TensorProto.FLOAT, [2])])
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])


def test_150k_small_tensors_convert_under_a_1_gib_limit(work):
    model = work / "many.onnx"
    model.write_bytes(many_constants(150_000, lambda i: f"c{i}").SerializeToString())
    result = run_limited(["convert", model, "-o", work / "many.tess", "--quiet"], memory=GIB, timeout=300)
    assert result.returncode == 0, result.stderr[-2000:]
    assert "150000 tensors, lossless" in result.stdout


def test_repeated_names_get_distinct_suffixes(work):
    model = work / "same.onnx"
    model.write_bytes(many_constants(3000, lambda i: "w").SerializeToString())   # exporters that name every constant alike
    tess = work / "same.tess"
    tessera("convert", model, "-o", tess, "--quiet")
    import json
    names = [t["name"] for t in json.loads(tessera("inspect", tess, "--json").stdout)["tensors"]]
    assert names == ["w"] + [f"w#{k}" for k in range(1, 3000)]


# -- 13. messages ------------------------------------------------------------------------------

def test_an_impossible_group_size_says_so(work):
    result = tessera("convert", DIGITS, "-o", work / "q.tess", "--quantize", f"int8:group={2**48 + 1}", check=False)
    assert result.returncode == 64 and "must be a whole number in 1...281474976710656" in result.stderr
    assert not (work / "q.tess").exists()


def test_an_input_that_overrides_an_initializer_can_be_given(work):
    import onnxruntime as ort
    graph = helper.make_graph([helper.make_node("Add", ["X", "B"], ["y"])], "g",
                              [helper.make_tensor_value_info("X", TensorProto.FLOAT, [2]),
                               helper.make_tensor_value_info("B", TensorProto.FLOAT, [2])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [2])],
                              [numpy_helper.from_array(np.ones(2, np.float32), "B")])
    model = work / "override.onnx"
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), model)
    x, b = np.array([1, 2], np.float32), np.array([10, 20], np.float32)
    np.save(work / "x.npy", x)
    np.save(work / "b.npy", b)
    expected = ort.InferenceSession(str(model)).run(None, {"X": x, "B": b})[0]
    for source in (model, work / "o.tess"):
        if source.suffix == ".tess":
            tessera("convert", model, "-o", source)
        out = work / f"{source.stem}.npz"
        tessera("run", source, "--input", f"X={work / 'x.npy'}", "--input", f"B={work / 'b.npy'}", "-o", out)
        assert np.array_equal(np.load(out)["y"], expected)
        tessera("run", source, "--input", f"X={work / 'x.npy'}", "-o", out, "--force")   # the default still works
        assert np.array_equal(np.load(out)["y"], x + 1)
