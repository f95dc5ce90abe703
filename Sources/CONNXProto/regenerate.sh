#!/usr/bin/env bash
# Regenerate onnx.pb-c.[ch] from the onnx.proto of the pinned onnx wheel (requirements.txt).
# Output is byte-identical for the same onnx.proto and protoc-c; review changes as a diff.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$here/../.." && pwd)
python=${PYTHON:-$root/.venv/bin/python}
proto_dir=$("$python" -c 'import onnx, os; print(os.path.dirname(onnx.__file__))')
version=$("$python" -c 'import onnx; print(onnx.__version__)')
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
cp "$proto_dir/onnx.proto" "$work/onnx.proto"
(cd "$work" && protoc-c --c_out=. onnx.proto)
cp "$work/onnx.pb-c.c" "$here/onnx.pb-c.c"
cp "$work/onnx.pb-c.h" "$here/include/onnx.pb-c.h"
sha=$(sha256sum "$work/onnx.proto" | cut -d' ' -f1)
echo "generated from onnx $version onnx.proto (sha256 $sha) with $(protoc-c --version | head -1)"
