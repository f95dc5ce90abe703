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
# onnx-data.proto (SequenceProto, OptionalProto: test data of sequence and optional inputs)
# imports onnx-ml.proto, which declares the same messages as onnx.proto in this release.
sed 's|^import "onnx/onnx-ml.proto";|import "onnx.proto";|' "$proto_dir/onnx-data.proto" > "$work/onnx-data.proto"
(cd "$work" && protoc-c --c_out=. onnx.proto onnx-data.proto)
for name in onnx onnx-data; do
    cp "$work/$name.pb-c.c" "$here/$name.pb-c.c"
    cp "$work/$name.pb-c.h" "$here/include/$name.pb-c.h"
done
for name in onnx onnx-data; do
    echo "generated from onnx $version $name.proto (sha256 $(sha256sum "$proto_dir/$name.proto" | cut -d' ' -f1)) with $(protoc-c --version | head -1)"
done
