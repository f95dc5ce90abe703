"""Shared helpers for the Python oracle tests: they run the built `tessera` binary and judge
its output with onnx and onnxruntime (never mocked)."""
import os
import subprocess
import sys

import numpy as np
import onnx
import pytest
from onnx import numpy_helper

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
sys.path.insert(0, os.path.join(ROOT, "fixtures"))


def tessera_binary():
    return os.environ.get("TESSERA", os.path.join(ROOT, ".build", "debug", "tessera"))


def tessera(*args, check=True):
    result = subprocess.run([tessera_binary(), *map(str, args)], capture_output=True, text=True)
    if check and result.returncode != 0:
        raise AssertionError(f"tessera {' '.join(map(str, args))} failed ({result.returncode}): {result.stderr}")
    return result


def _normalize_tensor(t):
    """The tensor with its data as raw_data (how it is stored never matters, what it holds does)."""
    if t.data_type == onnx.TensorProto.STRING:
        return
    n = numpy_helper.from_array(numpy_helper.to_array(t), t.name)
    n.doc_string = t.doc_string
    n.metadata_props.extend(t.metadata_props)
    t.CopyFrom(n)


def _normalize_graph(g):
    for t in g.initializer:
        _normalize_tensor(t)
    for s in g.sparse_initializer:
        _normalize_tensor(s.values)
        _normalize_tensor(s.indices)
    _normalize_nodes(g.node)


def _normalize_nodes(nodes):
    for node in nodes:
        for a in node.attribute:
            if a.HasField("t"):
                _normalize_tensor(a.t)
            for t in a.tensors:
                _normalize_tensor(t)
            if a.HasField("g"):
                _normalize_graph(a.g)
            for g in a.graphs:
                _normalize_graph(g)


def normalized_bytes(model):
    """Deterministic bytes of `model` with every tensor in raw_data form: two models with equal
    normalized bytes have the same graph, attributes, metadata and bit-identical tensors."""
    m = onnx.ModelProto()
    m.CopyFrom(model)
    _normalize_graph(m.graph)
    for f in m.functions:
        _normalize_nodes(f.node)
    return m.SerializeToString(deterministic=True)


def same_bits(a, b):
    """Equal values with equal bit patterns (NaNs and -0.0 included), recursively for sequences."""
    if isinstance(a, (list, tuple)):
        return isinstance(b, (list, tuple)) and len(a) == len(b) and all(same_bits(x, y) for x, y in zip(a, b))
    if isinstance(a, dict):
        return isinstance(b, dict) and a.keys() == b.keys() and all(same_bits(a[k], b[k]) for k in a)
    a, b = np.asarray(a), np.asarray(b)
    if a.dtype == object:  # strings: compare values, not object pointers
        return b.dtype == object and a.shape == b.shape and a.tolist() == b.tolist()
    return a.dtype == b.dtype and a.shape == b.shape and a.tobytes() == b.tobytes()


@pytest.fixture
def work(tmp_path):
    return tmp_path
