"""The ONNX node tests (regenerated from the onnx wheel, about 1,900) through `tessera run`.

Each test listed in node_tests_passing.txt must still pass (`make conformance` rewrites the list
as coverage grows; review its diff). Every other one must be refused cleanly: exit status 1 and
one error line, never a crash."""
import os
import subprocess
import sys

import pytest

from conftest import ROOT, tessera_binary

sys.path.insert(0, os.path.join(ROOT, "Benchmarks"))
import node_conformance  # noqa: E402

PASSING_LIST = os.path.join(os.path.dirname(__file__), "node_tests_passing.txt")
PASSING = sorted(line.strip() for line in open(PASSING_LIST) if line.strip())
# Every k-th test only (a fixed sample; `make sanitize` uses one, where each run is slow).
SAMPLE = int(os.environ.get("NODE_TEST_SAMPLE", "1"))


@pytest.fixture(scope="module")
def cases(tmp_path_factory):
    folder = tmp_path_factory.mktemp("node-tests")
    return {os.path.basename(case): case for case in node_conformance.generate(str(folder))}


def test_the_list_names_generated_tests(cases):
    assert len(cases) > 1800 and set(PASSING) <= set(cases)


@pytest.mark.parametrize("name", PASSING[::SAMPLE])
def test_node_test_passes(name, cases, tmp_path):
    ok, why = node_conformance.run_tessera(tessera_binary(), cases[name], str(tmp_path))
    assert ok, why


def test_every_other_node_test_is_refused_cleanly(cases, tmp_path):
    refused = []
    for name in sorted(set(cases) - set(PASSING))[::SAMPLE]:
        case = cases[name]
        model, inputs, _ = node_conformance.case_data(case)
        args = [tessera_binary(), "run", os.path.join(case, "model.onnx"), "-o", str(tmp_path / "out.npz"), "--force"]
        for info, path in zip(model.graph.input, inputs):
            args += ["--input", f"{info.name}={path}"]
        result = subprocess.run(args, capture_output=True, text=True, timeout=120)
        # Exit 0 with a wrong output is a failure the list records; what must never happen is a crash.
        lines = result.stderr.strip().splitlines()
        if result.returncode != 0:
            assert result.returncode == 1 and len(lines) == 1 and lines[0].startswith("tessera: error: "), (name, result.returncode, result.stderr[-2000:])
        refused.append(name)
    assert refused
