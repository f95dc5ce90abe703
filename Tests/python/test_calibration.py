"""convert --calibration: data-driven 2:4 pruning and quantization (SparseGPT, GPTQ), judged on
held-out data that calibration never saw, through onnxruntime on the exported model."""
import hashlib
import json
import os

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import TensorProto, helper, numpy_helper

from conftest import ROOT, tessera
from make_fixtures import digits_split

DIGITS = os.path.join(ROOT, "fixtures", "onnx", "digits_mlp.onnx")


@pytest.fixture(scope="module")
def digits(tmp_path_factory):
    """The digits split; 128 calibration images drawn from the training rows only."""
    x_train, x_test, _, y_test = digits_split()
    folder = tmp_path_factory.mktemp("calibration")
    calibration = folder / "digits.npz"
    rng = np.random.default_rng(0)
    np.savez(calibration, X=x_train[rng.choice(len(x_train), 128, replace=False)])
    return folder, calibration, x_test, y_test


def accuracy(folder, name, args, x_test, y_test):
    tess, exported = folder / f"{name}.tess", folder / f"{name}.onnx"
    result = tessera("convert", DIGITS, "-o", tess, "--force", *args)
    tessera("export", tess, "-o", exported, "--force")
    labels = ort.InferenceSession(str(exported)).run(None, {"X": x_test})[0]
    return float((labels == y_test).mean()), result


@pytest.mark.parametrize("mode,floor", [
    (["--prune", "2:4"], 0.965),
    (["--prune", "2:4", "--quantize", "int8"], 0.965),
])
def test_calibrated_2to4_beats_magnitude_on_held_out_digits(digits, mode, floor):
    folder, calibration, x_test, y_test = digits
    plain, plain_run = accuracy(folder, "plain", mode, x_test, y_test)
    calibrated, run = accuracy(folder, "calibrated", mode + ["--calibration", calibration], x_test, y_test)
    # Magnitude 2:4 gives 91.6% on the 450 test images; the dense model 98.2%.
    assert plain < 0.93 and "uncalibrated" in plain_run.stdout
    assert calibrated >= floor and calibrated > plain + 0.04, (plain, calibrated)
    assert "calibrated on digits.npz (128 samples" in run.stdout


@pytest.mark.parametrize("mode", [["--prune", "2:4"], ["--prune", "2:4", "--quantize", "int8"]])
def test_least_squares_refit_reaches_97_percent(digits, mode):
    folder, calibration, x_test, y_test = digits
    sweep, _ = accuracy(folder, "sweep", mode + ["--calibration", calibration], x_test, y_test)
    refit, run = accuracy(folder, "refit", mode + ["--calibration", calibration, "--calibration-refit"], x_test, y_test)
    assert refit >= 0.97 and refit >= sweep, (sweep, refit)
    report = json.loads(tessera("inspect", folder / "refit.tess", "--json").stdout)["metadata"]["conversion"]["calibration"]
    assert all(layer["method"].endswith("+ LS refit") for layer in report["layers"])


def test_calibrated_int4_is_at_least_as_good_as_rounding(digits):
    folder, calibration, x_test, y_test = digits
    plain, _ = accuracy(folder, "plain", ["--quantize", "int4:group=16"], x_test, y_test)
    calibrated, _ = accuracy(folder, "calibrated", ["--quantize", "int4:group=16", "--calibration", calibration], x_test, y_test)
    assert calibrated >= plain and calibrated >= 0.975


def test_report_names_the_set_and_every_layer_error(digits):
    folder, calibration, _, _ = digits
    tess = folder / "report.tess"
    tessera("convert", DIGITS, "-o", tess, "--force", "--prune", "2:4", "--quantize", "int8", "--calibration", calibration,
            "--report", folder / "report.json")
    report = json.loads((folder / "report.json").read_text())["calibration"]
    assert report["sha256"] == hashlib.sha256(calibration.read_bytes()).hexdigest()
    assert report["samples"] == 128 and report["sequential"] is True
    layers = {layer["tensor"]: layer for layer in report["layers"]}
    assert set(layers) == {"coefficient", "coefficient1"}   # the 320-element output layer stays exact
    for layer in layers.values():
        assert layer["rows"] == 128 and layer["method"] == "SparseGPT 2:4 + GPTQ int8"
        assert 0 < layer["relative_output_error"] < 0.05
    shown = tessera("inspect", tess).stdout
    assert report["sha256"] in shown and "SparseGPT 2:4 + GPTQ int8" in shown
    stored = json.loads(tessera("inspect", tess, "--json").stdout)["metadata"]["conversion"]["calibration"]
    assert stored == report


def test_calibrated_weights_keep_their_2to4_pattern_and_grid(digits):
    folder, calibration, _, _ = digits
    tess, exported = folder / "grid.tess", folder / "grid.onnx"
    tessera("convert", DIGITS, "-o", tess, "--force", "--prune", "2:4", "--quantize", "int8", "--calibration", calibration)
    tessera("export", tess, "-o", exported, "--force", "--keep-quantized")
    stored = {t.name: numpy_helper.to_array(t) for t in onnx.load(str(exported)).graph.initializer}
    source = {t.name: numpy_helper.to_array(t) for t in onnx.load(DIGITS).graph.initializer}
    for name in ("coefficient", "coefficient1"):
        codes = stored[name + "::quantized"]   # MatMul [K, N]: groups of four along K
        assert codes.dtype == np.int8 and ((codes.reshape(-1, 4, codes.shape[1]) != 0).sum(axis=1) <= 2).all()
    # GPTQ per channel: each output's scale comes from its source column before the sweep, less
    # the rows of inputs that calibration never saw non-zero (blank border pixels), which go.
    dead = (np.load(calibration)["X"] == 0).all(axis=0)
    expected = (np.abs(source["coefficient"][~dead]).max(axis=0) / np.float32(127)).astype(np.float32)
    assert dead.any() and np.array_equal(stored["coefficient::scale"], expected)
    layout = json.loads(tessera("inspect", tess, "--json").stdout)["tensors"]
    assert {t["name"]: t["layout"] for t in layout}["coefficient"] == "sparse24"


def test_gemm_with_transposed_weight_is_calibrated_along_its_reduction_axis(tmp_path):
    rng = np.random.default_rng(1)
    mixing = rng.normal(size=(32, 32)).astype(np.float32)
    w = rng.normal(size=(16, 32)).astype(np.float32)   # transB=1: [N, K]
    graph = helper.make_graph(
        [helper.make_node("Gemm", ["x", "w"], ["y"], transB=1)], "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [None, 32])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [None, 16])], [numpy_helper.from_array(w, "w")])
    model = tmp_path / "gemm.onnx"
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), model)
    x = rng.normal(size=(512, 32)).astype(np.float32) @ mixing
    np.savez(tmp_path / "calib.npz", x=x[:256])
    held_out = x[256:]

    def error(args, name):
        tessera("convert", model, "-o", tmp_path / f"{name}.tess", "--force", "--prune", "2:4", "--minimum-elements", "1", *args)
        tessera("export", tmp_path / f"{name}.tess", "-o", tmp_path / f"{name}.onnx", "--force")
        pruned = numpy_helper.to_array(onnx.load(str(tmp_path / f"{name}.onnx")).graph.initializer[0])
        assert ((pruned.reshape(16, 8, 4) != 0).sum(axis=2) <= 2).all()   # 2:4 along K, axis 1
        return np.linalg.norm(held_out @ (pruned - w).T) / np.linalg.norm(held_out @ w.T)

    assert error(["--calibration", tmp_path / "calib.npz"], "calibrated") < 0.8 * error([], "plain")


def test_bad_calibration_sets_fail_with_one_line_and_no_output(digits, tmp_path):
    _, calibration, _, _ = digits
    x = np.load(calibration)["X"]
    cases = {
        "named.npz": ({"Y": x}, "array 'Y' is not a graph input"),
        "ragged.npz": ({"X": x[:0]}, "batch length"),
    }
    for name, (arrays, message) in cases.items():
        np.savez(tmp_path / name, **arrays)
    np.savez_compressed(tmp_path / "deflated.npz", X=x)
    cases["deflated.npz"] = (None, "write the archive with np.savez")
    (tmp_path / "text.npz").write_text("not a zip")
    cases["text.npz"] = (None, "not a readable .npz archive")
    for name, (_, message) in cases.items():
        out = tmp_path / "out.tess"
        result = tessera("convert", DIGITS, "-o", out, "--prune", "2:4", "--calibration", tmp_path / name, check=False)
        assert result.returncode == 1 and message in result.stderr, (name, result.stderr)
        assert len(result.stderr.strip().splitlines()) == 1 and not out.exists()
    lossless = tessera("convert", DIGITS, "-o", tmp_path / "out.tess", "--calibration", calibration, check=False)
    assert lossless.returncode != 0 and "nothing to calibrate" in lossless.stderr
    missing = tessera("convert", DIGITS, "-o", tmp_path / "out.tess", "--prune", "2:4", "--calibration", tmp_path / "none.npz", check=False)
    assert missing.returncode == 1 and "none.npz" in missing.stderr and not (tmp_path / "out.tess").exists()


def test_small_calibration_sets_are_warned_about(digits, tmp_path):
    _, calibration, _, _ = digits
    np.savez(tmp_path / "small.npz", X=np.load(calibration)["X"][:40])
    result = tessera("convert", DIGITS, "-o", tmp_path / "out.tess", "--prune", "2:4", "--calibration", tmp_path / "small.npz")
    assert "warning: the calibration set has 40 samples" in result.stderr
    assert "fewer than twice the widest layer's reduction size (64)" in result.stderr


def test_a_recipe_names_its_calibration_set(digits):
    folder, calibration, x_test, y_test = digits
    recipe = folder / "recipe.json"
    recipe.write_text(json.dumps({"prune": "2:4", "calibration": str(calibration)}))
    calibrated, run = accuracy(folder, "recipe", ["--recipe", recipe], x_test, y_test)
    assert "calibrated on digits.npz" in run.stdout and calibrated >= 0.965


@pytest.mark.parametrize("attributes", [{}, {"pads": [1, 1, 1, 1], "strides": [2, 1], "dilations": [1, 2]}])
def test_conv_is_calibrated_on_im2col_patches(tmp_path, attributes):
    """Conv [Cout, Cin, 3, 3] pruned 2:4 along Cin: the calibrated weight reproduces held-out
    outputs better than magnitude pruning, which it cannot unless the patches match the groups."""
    rng = np.random.default_rng(2)
    w = rng.normal(size=(8, 16, 3, 3)).astype(np.float32)
    graph = helper.make_graph(
        [helper.make_node("Conv", ["x", "w"], ["y"], **attributes)], "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [None, 16, 10, 10])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)], [numpy_helper.from_array(w, "w")])
    model = tmp_path / "conv.onnx"
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), model)
    # Channels correlated through a shared mixing, smooth in space.
    mixing = rng.normal(size=(16, 4)).astype(np.float32)
    x = np.einsum("ck,nkhw->nchw", mixing, rng.normal(size=(96, 4, 10, 10)).astype(np.float32))
    x += 0.1 * rng.normal(size=x.shape).astype(np.float32)
    np.savez(tmp_path / "calib.npz", x=x[:64])
    held_out = {"x": x[64:]}
    reference = ort.InferenceSession(str(model)).run(None, held_out)[0]

    def error(args, name, mode=("--prune", "2:4")):
        tessera("convert", model, "-o", tmp_path / f"{name}.tess", "--force", *mode, *args)
        tessera("export", tmp_path / f"{name}.tess", "-o", tmp_path / f"{name}.onnx", "--force")
        pruned = numpy_helper.to_array(onnx.load(str(tmp_path / f"{name}.onnx")).graph.initializer[0])
        if "2:4" in mode:
            assert ((np.moveaxis(pruned, 1, -1).reshape(-1, 4) != 0).sum(axis=1) <= 2).all()   # 2:4 along Cin
        out = ort.InferenceSession(str(tmp_path / f"{name}.onnx")).run(None, held_out)[0]
        return np.linalg.norm(out - reference) / np.linalg.norm(reference)

    int4 = ("--quantize", "int4:group=8")   # groups of 8 input channels at each kernel position
    rounded, gptq = error([], "rounded", int4), error(["--calibration", tmp_path / "calib.npz"], "gptq", int4)
    assert gptq < rounded, (rounded, gptq)
    plain, calibrated = error([], "plain"), error(["--calibration", tmp_path / "calib.npz"], "calibrated")
    assert calibrated < 0.7 * plain, (plain, calibrated)
    report = json.loads(tessera("inspect", tmp_path / "calibrated.tess", "--json").stdout)["metadata"]["conversion"]["calibration"]
    rows = 64 * (5 * 8 if attributes else 8 * 8)   # one row per output position
    assert [(l["tensor"], l["rows"]) for l in report["layers"]] == [("w", rows)]
    # The reported error is ‖X(Ŵ−W)‖²/‖XW‖² over the patches: onnxruntime's convolution of the
    # calibration inputs must give the same number, or the patches were not the Conv's.
    calibration = {"x": x[:64]}
    source_out = ort.InferenceSession(str(model)).run(None, calibration)[0]
    pruned_out = ort.InferenceSession(str(tmp_path / "calibrated.onnx")).run(None, calibration)[0]
    expected = np.sum((pruned_out.astype(np.float64) - source_out) ** 2) / np.sum(source_out.astype(np.float64) ** 2)
    assert abs(report["layers"][0]["relative_output_error"] - expected) < 1e-3 * expected


def test_bias_correction_shifts_the_bias_by_the_mean_output_change(digits):
    folder, calibration, x_test, y_test = digits
    corrected, run = accuracy(folder, "bias", ["--prune", "2:4", "--calibration", calibration, "--bias-correction"], x_test, y_test)
    assert corrected >= 0.95, corrected
    exported = {t.name: numpy_helper.to_array(t) for t in onnx.load(str(folder / "bias.onnx")).graph.initializer}
    source = {t.name: numpy_helper.to_array(t) for t in onnx.load(DIGITS).graph.initializer}
    # The first layer reads the images themselves: its shift is (W − Ŵ)ᵀ · mean of the calibration rows.
    mean = np.load(calibration)["X"].astype(np.float64).mean(axis=0)
    shift = (source["coefficient"].astype(np.float64) - exported["coefficient"]).T @ mean
    assert np.allclose(exported["intercepts"], source["intercepts"] + shift, atol=1e-5)
    assert not np.array_equal(exported["intercepts"], source["intercepts"])
    report = json.loads(tessera("inspect", folder / "bias.tess", "--json").stdout)["metadata"]["conversion"]
    assert all(layer["method"].endswith("+ bias correction") for layer in report["calibration"]["layers"])
    lines = {t["name"]: t for t in report["tensors"]}
    assert lines["intercepts"]["fidelity"]["bit_exact"] is False and "calibrated" in lines["intercepts"]["reason"]
    refused = tessera("convert", DIGITS, "-o", folder / "x.tess", "--prune", "2:4", "--bias-correction", check=False)
    assert refused.returncode != 0 and "need --calibration" in refused.stderr


def test_a_set_with_nothing_to_calibrate_says_so(digits, tmp_path):
    """Every GEMM weight skipped by the recipe: the summary must not claim a calibration."""
    _, calibration, _, _ = digits
    recipe = tmp_path / "skip.json"
    recipe.write_text(json.dumps({"quantize": "int8", "rules": [{"match": "coefficient*", "skip": True}]}))
    result = tessera("convert", DIGITS, "-o", tmp_path / "out.tess", "--recipe", recipe, "--calibration", calibration)
    assert "no weight could be calibrated" in result.stdout
