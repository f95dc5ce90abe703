"""Seed corpus for FuzzGraph (and, converted, for FuzzReader): the onnx wheel's small model
tests and one small graph per shape-making op, so the fuzzer starts from models the executor
runs and mutates their constants, attributes and shapes."""
import glob
import os
import shutil
import sys

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

out = sys.argv[1]
os.makedirs(out, exist_ok=True)

data = os.path.join(os.path.dirname(onnx.__file__), "backend", "test", "data")
for path in sorted(glob.glob(os.path.join(data, "*", "*", "model.onnx"))):
    if os.path.getsize(path) <= 16384 and "/light/" not in path:
        shutil.copy(path, os.path.join(out, "wheel_" + path.split(os.sep)[-2] + ".onnx"))


def const(name, values, dtype=np.int64):
    return helper.make_node("Constant", [], [name], value=numpy_helper.from_array(np.array(values, dtype), name + "_v"))


def save(name, nodes, inputs=(), initializers=()):
    x = [helper.make_tensor_value_info(n, TensorProto.FLOAT, s) for n, s in inputs]
    graph = helper.make_graph(nodes, name, x, [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)], list(initializers))
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), os.path.join(out, f"shape_{name}.onnx"))


save("constant_of_shape", [const("s", [2, 3]), helper.make_node("ConstantOfShape", ["s"], ["y"])])
save("expand", [const("s", [2, 3]), helper.make_node("Expand", ["X", "s"], ["y"])], [("X", [1, 3])])
save("tile", [const("r", [2, 2]), helper.make_node("Tile", ["X", "r"], ["y"])], [("X", [2, 3])])
save("range", [const("a", 0), const("b", 8), const("d", 2), helper.make_node("Range", ["a", "b", "d"], ["r"]),
               helper.make_node("Cast", ["r"], ["y"], to=TensorProto.FLOAT)])
save("reshape", [const("s", [3, -1]), helper.make_node("Reshape", ["X", "s"], ["y"])], [("X", [2, 3])])
save("pad", [const("p", [0, 1, 0, 2]), helper.make_node("Pad", ["X", "p"], ["y"], mode="reflect")], [("X", [2, 3])])
save("gather", [const("i", [[0, 1], [1, 0]]), helper.make_node("Gather", ["X", "i"], ["y"], axis=1)], [("X", [2, 3])])
save("slice", [const("s", [0, 1]), const("e", [2, 3]), helper.make_node("Slice", ["X", "s", "e"], ["y"])], [("X", [2, 3])])
save("matmul", [helper.make_node("MatMul", ["X", "W"], ["y"])], [("X", [2, 3])],
     [numpy_helper.from_array(np.arange(12, dtype=np.float32).reshape(3, 4), "W")])
save("conv", [helper.make_node("Conv", ["X", "W"], ["y"], pads=[1, 1, 1, 1], strides=[2, 2], dilations=[1, 1])], [("X", [1, 2, 5, 5])],
     [numpy_helper.from_array(np.ones((3, 2, 3, 3), np.float32), "W")])
save("maxpool", [helper.make_node("MaxPool", ["X"], ["y"], kernel_shape=[2, 2], ceil_mode=1, strides=[2, 2])], [("X", [1, 1, 5, 5])])
save("concat_transpose", [helper.make_node("Concat", ["X", "X"], ["c"], axis=0), helper.make_node("Transpose", ["c"], ["y"], perm=[1, 0])],
     [("X", [2, 3])])
print(len(os.listdir(out)), "seeds in", out)
