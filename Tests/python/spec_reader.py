"""An independent .tess reader, written from spec/FORMAT.md alone (not from the Swift code).

Its job in the test suite: prove the spec is complete and the Swift writer follows it. It checks
the structural rules it needs and decodes every layout, codec and quantization to numpy.
"""
import json
import struct

import numpy as np
import xxhash
import zstandard

MAGIC = b"\x89TESS\r\n\x1a"
# ONNX data type number -> (numpy dtype, bits); 4-bit types are unpacked by hand.
NUMPY = {1: "<f4", 2: "u1", 3: "i1", 4: "<u2", 5: "<i2", 6: "<i4", 7: "<i8", 9: "u1", 10: "<f2",
         11: "<f8", 12: "<u4", 13: "<u8", 16: "<u2"}
BITS = {1: 32, 2: 8, 3: 8, 4: 16, 5: 16, 6: 32, 7: 64, 9: 8, 10: 16, 11: 64, 12: 32, 13: 64,
        14: 64, 15: 128, 16: 16, 17: 8, 18: 8, 19: 8, 20: 8, 21: 4, 22: 4, 23: 4}
INDEX_TYPES = {2: "u1", 4: "<u2", 12: "<u4", 13: "<u8"}


def xxh3(data):
    return xxhash.xxh3_64_intdigest(bytes(data))


def nbytes(dtype, count):
    return (count * BITS[dtype] + 7) // 8


class Cursor:
    def __init__(self, data):
        self.data, self.pos = data, 0

    def take(self, fmt):
        values = struct.unpack_from("<" + fmt, self.data, self.pos)
        self.pos += struct.calcsize("<" + fmt)
        return values if len(values) > 1 else values[0]

    def bytes(self, n):
        out = self.data[self.pos:self.pos + n]
        assert len(out) == n, "truncated index"
        self.pos += n
        return out


class TessFile:
    def __init__(self, path):
        data = open(path, "rb").read()
        assert data[:8] == MAGIC, "magic"
        (major, minor, marker, header_size, alignment, features, index_offset, index_length,
         index_checksum, header_checksum) = struct.unpack_from("<HHIIIQQQQQ", data, 8)
        assert major == 1 and marker == 0x0A0B0C0D and header_size == 64 and features & ~1 == 0
        assert header_checksum == xxh3(data[:56]), "header checksum"
        assert index_offset + index_length == len(data), "file length"
        index = data[index_offset:]
        assert xxh3(index) == index_checksum, "index checksum"
        self.data, self.alignment, self.version = data, alignment, (major, minor)
        c = Cursor(index)
        tensor_count, buffer_count, section_count, reserved = c.take("IIII")
        assert reserved == 0
        self.buffers = [dict(zip(("offset", "stored", "decoded", "checksum", "codec", "parameter"), c.take("QQQQII")))
                        for _ in range(buffer_count)]
        self.tensors = {}
        for _ in range(tensor_count):
            t = self._tensor_entry(c)
            self.tensors[t["name"]] = t
        self.sections, compressed = {}, False
        for _ in range(section_count):
            kind, flags, length = c.take("IIQ")
            assert flags & ~3 == 0, "reserved section flags"
            payload = c.bytes(length)
            if flags & 2:  # format 1.1: one zstd frame that records its size
                payload, compressed = zstandard.ZstdDecompressor().decompress(payload), True
            self.sections[kind] = payload
        assert compressed == bool(features & 1), "feature bit 0 is set exactly when a section is compressed"
        assert c.pos == len(index), "bytes after the last section"
        # Section 4: exact tiling with zero padding.
        align = lambda x: (x + alignment - 1) & ~(alignment - 1)
        expected, previous_end = align(64), 64
        for b in self.buffers:
            assert b["offset"] == expected, "buffer offset"
            assert not any(data[previous_end:expected]), "padding"
            previous_end = b["offset"] + b["stored"]
            expected = align(previous_end)
        assert index_offset == expected and not any(data[previous_end:expected])

    def _tensor_entry(self, c):
        name = c.bytes(c.take("I")).decode("utf-8")
        dtype, layout, role, axis, rank = c.take("IIIiI")
        shape = [c.take("Q") for _ in range(rank)]
        t = {"name": name, "dtype": dtype, "layout": layout, "role": role, "axis": None if axis == -1 else axis, "shape": shape}
        if c.take("I") == 1:
            code, scale, granularity, q_axis, group, scales, zero_points = c.take("IIIiQII")
            t["quant"] = {"code": code, "scale": scale, "granularity": granularity, "axis": q_axis, "group": group,
                          "scales": scales, "zero_points": None if zero_points == 0xFFFFFFFF else zero_points}
        if layout == 0:
            t["values"] = c.take("I")
        elif layout == 1:
            t["row_type"], t["col_type"], t["nnz"], t["row_pointers"], t["columns"], t["values"] = c.take("IIQIII")
        else:
            t["values"], t["metadata"] = c.take("II")
        return t

    @property
    def metadata(self):
        return json.loads(self.sections[1]) if 1 in self.sections else None

    def buffer(self, i):
        b = self.buffers[i]
        stored = self.data[b["offset"]:b["offset"] + b["stored"]]
        if b["codec"] == 0:
            decoded = stored
        else:
            decoded = zstandard.ZstdDecompressor().decompress(stored, max_output_size=b["decoded"])
            if b["codec"] == 2:  # byte planes: shuffled byte j*n + i is decoded byte i*w + j
                w = b["parameter"]
                decoded = np.frombuffer(decoded, np.uint8).reshape(w, -1).T.tobytes()
        assert len(decoded) == b["decoded"] and xxh3(decoded) == b["checksum"], f"buffer {i}"
        return decoded

    def _elements(self, buffer, dtype, count):
        raw = self.buffer(buffer)
        assert len(raw) == nbytes(dtype, count)
        if BITS[dtype] == 4:  # two per byte, first in the low nibble
            nibbles = np.stack([np.frombuffer(raw, np.uint8) & 0x0F, np.frombuffer(raw, np.uint8) >> 4], axis=1).ravel()[:count]
            return ((nibbles.astype(np.int8) << 4) >> 4) if dtype == 22 else nibbles
        return np.frombuffer(raw, NUMPY[dtype], count)

    def array(self, name):
        """The tensor as numpy: its own dtype when plain (bit-exact), float32 when quantized."""
        t = self.tensors[name]
        shape, q = t["shape"], t.get("quant")
        numel = int(np.prod(shape, dtype=np.int64)) if shape else 1
        value_type = q["code"] if q else t["dtype"]
        if t["layout"] == 0:
            values = self._elements(t["values"], value_type, numel)
            present = np.ones(numel, bool)
            flat = values
        else:
            flat = np.zeros(numel, np.int8 if value_type == 22 else np.uint8 if BITS[value_type] == 4 else NUMPY[value_type])
            present = np.zeros(numel, bool)
            if t["layout"] == 1:  # CSR over (d0, rest) / 1 x d0 / 1 x 1
                rows = shape[0] if len(shape) >= 2 else 1
                cols = numel // rows if rows else 0
                rp = np.frombuffer(self.buffer(t["row_pointers"]), INDEX_TYPES[t["row_type"]], rows + 1).astype(np.int64)
                ci = np.frombuffer(self.buffer(t["columns"]), INDEX_TYPES[t["col_type"]], t["nnz"]).astype(np.int64)
                assert rp[0] == 0 and (np.diff(rp) >= 0).all() and rp[-1] == t["nnz"] and (ci < max(cols, 1)).all()
                row_of = np.repeat(np.arange(rows), np.diff(rp))
                positions = row_of * cols + ci
                flat[positions] = self._elements(t["values"], value_type, t["nnz"])
                present[positions] = True
            else:  # 2:4 along the reduction axis: view with that axis moved last
                r = t["axis"]
                L = shape[r]
                moved = [d for k, d in enumerate(shape) if k != r] + [L]
                groups = numel // 4
                meta = np.frombuffer(self.buffer(t["metadata"]), np.uint8)
                nibbles = np.stack([meta & 0x0F, meta >> 4], axis=1).ravel()[:groups]
                i0, i1 = nibbles & 3, nibbles >> 2
                assert (i0 < i1).all(), "2:4 nibble"
                values = self._elements(t["values"], value_type, numel // 2).reshape(groups, 2)
                view = np.zeros((groups, 4), values.dtype)
                mask = np.zeros((groups, 4), bool)
                g = np.arange(groups)
                view[g, i0], view[g, i1] = values[:, 0], values[:, 1]
                mask[g, i0] = mask[g, i1] = True
                flat = np.moveaxis(view.reshape(moved), -1, r).ravel()
                present = np.moveaxis(mask.reshape(moved), -1, r).ravel()
        if not q:
            return flat.reshape(shape)
        # real = scale[s] * (code - zero_point[s]); absent elements are exactly 0.
        scales = self._elements(q["scales"], q["scale"], self._scale_count(shape, q)).astype(np.float32)
        zps = (self._elements(q["zero_points"], q["code"], self._scale_count(shape, q)).astype(np.float32)
               if q["zero_points"] is not None else np.zeros_like(scales))
        s = self._scale_index(shape, q)
        real = scales[s] * (flat.astype(np.float32) - zps[s])
        return np.where(present, real, np.float32(0)).astype(np.float32).reshape(shape)

    @staticmethod
    def _scale_count(shape, q):
        if q["granularity"] == 0:
            return 1
        a = q["axis"]
        if q["granularity"] == 1:
            return shape[a]
        blocked = list(shape)
        blocked[a] = -(-shape[a] // q["group"])
        return int(np.prod(blocked))

    @staticmethod
    def _scale_index(shape, q):
        numel = int(np.prod(shape)) if shape else 1
        f = np.arange(numel)
        if q["granularity"] == 0:
            return np.zeros(numel, np.int64)
        a = q["axis"]
        inner = int(np.prod(shape[a + 1:])) if a + 1 < len(shape) else 1
        i = (f // inner) % shape[a]
        if q["granularity"] == 1:
            return i
        o, t = f // (shape[a] * inner), f % inner
        blocks = -(-shape[a] // q["group"])
        return (o * blocks + i // q["group"]) * inner + t
