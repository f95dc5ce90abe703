"""spec/FORMAT.md is complete: a reader written from it alone (spec_reader.py) reads every file
the Swift writer produces and decodes the values that `tessera export` writes to ONNX."""
import os

import numpy as np
import onnx
import pytest
from onnx import numpy_helper

from conftest import ROOT, tessera
from spec_reader import TessFile
from test_converter import asp_model

DIGITS = os.path.join(ROOT, "fixtures", "onnx", "digits_mlp.onnx")
PRUNED = os.path.join(ROOT, "fixtures", "onnx", "digits_mlp_pruned.onnx")
SMALL = ["--minimum-elements", "64"]
CASES = {
    "lossless-zstd": (DIGITS, []),
    "lossless-zero-copy": (DIGITS, ["--compress", "none"]),
    "int8": (DIGITS, ["--quantize", "int8", *SMALL]),
    "uint8-asymmetric": (DIGITS, ["--quantize", "int8", "--asymmetric", *SMALL]),
    "int4-groups": (DIGITS, ["--quantize", "int4:group=16", *SMALL]),
    "uint4-groups": (DIGITS, ["--quantize", "int4:group=5", "--asymmetric", *SMALL]),
    "2:4+int8": (DIGITS, ["--prune", "2:4", "--quantize", "int8", *SMALL]),
    "csr-detected": (PRUNED, []),
    "csr+int4": (PRUNED, ["--quantize", "int4:group=8", *SMALL]),
    "asp-2:4-conv": ("asp", []),
}


@pytest.mark.parametrize("case", sorted(CASES))
def test_spec_reader_decodes_what_export_writes(case, work):
    source, args = CASES[case]
    if source == "asp":
        source = work / "asp.onnx"
        onnx.save(asp_model(np.random.default_rng(0)), source)
    tess = work / "m.tess"
    tessera("convert", source, "-o", tess, "--quiet", *args)
    tessera("export", tess, "-o", work / "m.onnx")
    for path in (tess, work / "packed.tess"):
        if path != tess:
            tessera("pack", tess, "-o", path, "--level", "5")
        reader = TessFile(path)
        assert reader.metadata["producer"] == "tessera"
        exported = {t.name: numpy_helper.to_array(t) for t in onnx.load(work / "m.onnx").graph.initializer}
        for name in reader.tensors:
            mine = reader.array(name)
            theirs = exported[name]
            assert mine.shape == theirs.shape and mine.dtype == theirs.dtype, name
            assert mine.tobytes() == theirs.tobytes(), f"{case}: {name}"


def test_spec_reader_reads_the_golden_file():
    reader = TessFile(os.path.join(ROOT, "fixtures", "golden", "tiny.tess"))
    assert reader.version == (1, 0) and reader.alignment == 16
    assert reader.array("fc.weight").tolist() == [[1, 0], [0, 5], [2, 6], [0, 0]]
    assert reader.array("fc.bias").tolist() == [-32.0, 63.5]
