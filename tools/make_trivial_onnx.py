"""Writes tests/fixtures/trivial/add_one.onnx: y = x + 1 over a float32 [N] vector.

Used to time ONNX Runtime start-up and to test session creation without the SDXL fixtures.
Run with the generator environment (tools/requirements.txt):
    /path/to/venv/bin/python tools/make_trivial_onnx.py
"""
import pathlib

import onnx
from onnx import TensorProto, helper

OUT = pathlib.Path(__file__).resolve().parent.parent / "tests" / "fixtures" / "trivial" / "add_one.onnx"

x = helper.make_tensor_value_info("x", TensorProto.FLOAT, ["n"])
y = helper.make_tensor_value_info("y", TensorProto.FLOAT, ["n"])
one = helper.make_tensor("one", TensorProto.FLOAT, [1], [1.0])
graph = helper.make_graph([helper.make_node("Add", ["x", "one"], ["y"])], "add_one", [x], [y], [one])
model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)], producer_name="sdxl-backend tools")
model.ir_version = 9
onnx.checker.check_model(model)
OUT.parent.mkdir(parents=True, exist_ok=True)
onnx.save(model, OUT)
print(f"wrote {OUT} ({OUT.stat().st_size} bytes)")
