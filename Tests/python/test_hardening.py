"""A file from the network must not crash, hang or exhaust a device, and a killed tool must not
corrupt a user's files."""
import os
import signal
import struct
import subprocess
import sys
import time

import pytest
import xxhash
import zstandard

from conftest import ROOT, tessera, tessera_binary
from test_onnx_roundtrip import minilm_path

MAGIC = b"\x89TESS\r\n\x1a"


def craft(buffers, tensors, tensor_count=None, buffer_count=None, sections=b"", section_count=0, alignment=64):
    """A .tess file with the given buffers (stored, codec, decoded, checksum) and raw tensor
    entries, tiled and checksummed as spec/FORMAT.md says, so only the intended rule is broken."""
    align = lambda n: (n + alignment - 1) & ~(alignment - 1)
    data = bytearray(64)
    table = b""
    for stored, codec, decoded, checksum in buffers:
        data += bytes(align(len(data)) - len(data))
        table += struct.pack("<QQQQII", len(data), len(stored), decoded, checksum, codec, 0)
        data += stored
    data += bytes(align(len(data)) - len(data))
    index = struct.pack("<IIII", len(tensors) if tensor_count is None else tensor_count,
                        len(buffers) if buffer_count is None else buffer_count, section_count, 0)
    index += table + b"".join(tensors) + sections
    offset = len(data)
    data += index
    header = MAGIC + struct.pack("<HHIIIQQQQ", 1, 0, 0x0A0B0C0D, 64, alignment, 0, offset, len(index), xxhash.xxh3_64_intdigest(index))
    data[:64] = header + struct.pack("<Q", xxhash.xxh3_64_intdigest(header))
    return bytes(data)


def dense_entry(name, dtype, dims, buffer):
    n = name.encode()
    return (struct.pack("<I", len(n)) + n + struct.pack("<IIIiI", dtype, 0, 0, -1, len(dims))
            + b"".join(struct.pack("<Q", d) for d in dims) + struct.pack("<II", 0, buffer))


def csr_entry(name, dims, row_pointers, columns, values, nnz):
    n = name.encode()
    return (struct.pack("<I", len(n)) + n + struct.pack("<IIIiI", 1, 1, 0, -1, len(dims))
            + b"".join(struct.pack("<Q", d) for d in dims) + struct.pack("<I", 0)
            + struct.pack("<IIQIII", 2, 2, nnz, row_pointers, columns, values))


def zstd_header_only(content_size):
    """A valid one-block zstd frame that declares `content_size` bytes: 17 bytes on disk."""
    return (bytes([0x28, 0xB5, 0x2F, 0xFD, 0xE0]) + struct.pack("<Q", content_size)
            + bytes([0x0B, 0x00, 0x00, 0x00]))  # last block, RLE, one byte of 0x00


def peak_rss_of(args):
    """Exit status, stderr and peak RSS (bytes) of one run of `args`, in a fresh wrapper
    process so that earlier children do not count."""
    probe = ("import resource, subprocess, sys; r = subprocess.run(sys.argv[1:], capture_output=True, text=True); "
             "print(r.returncode); print(resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss * 1024); "
             "sys.stdout.write(r.stderr)")
    out = subprocess.run([sys.executable, "-c", probe, *map(str, args)], capture_output=True, text=True, check=True).stdout
    status, rss, stderr = out.split("\n", 2)
    return int(status), int(rss), stderr


HOSTILE = {
    # A 1 KB file whose zstd buffer claims 60 GB (under the 64 GB cap): only the expansion bound
    # (a stored length limits what zstd can produce) stops the allocation.
    "60 GB from 17 bytes": (lambda: craft([(zstd_header_only(60 * 10**9), 1, 60 * 10**9, 0)],
                                          [dense_entry("w", 2, [60 * 10**9], 0)]), "zstd cannot expand"),
    "100 GB uncompressed claim": (lambda: craft([(b"\0" * 64, 0, 100 * 10**9, 0)], [dense_entry("w", 1, [25 * 10**9], 0)]),
                                  "uncompressed buffer 0 stores 64 bytes but declares"),
    "a billion tensors": (lambda: craft([], [], tensor_count=10**9), "exceed the limit of 1000000"),
    "a million tensors in a tiny index": (lambda: craft([], [], tensor_count=10**6), "more than its"),
    "a 1 TB graph section": (lambda: craft([], [], sections=struct.pack("<IIQ", 2, 0, 2**40), section_count=1), "ends after"),
    "a frame larger than declared": (lambda: craft([(zstandard.ZstdCompressor().compress(b"\0" * 10**7), 1, 1000, 0)],
                                                   [dense_entry("w", 2, [1000], 0)]), "declares 10000000 content bytes"),
    "a frame without a content size": (lambda: craft(
        [(zstandard.ZstdCompressor(write_content_size=False).compress(b"\0" * 1000), 1, 1000, 0)],
        [dense_entry("w", 2, [1000], 0)]), "does not record its content size"),
    "row pointers running backwards": (lambda: craft(
        [(bytes([0, 3, 2]), 0, 3, xxhash.xxh3_64_intdigest(bytes([0, 3, 2]))),
         (bytes([0, 1, 2]), 0, 3, xxhash.xxh3_64_intdigest(bytes([0, 1, 2]))),
         (bytes(12), 0, 12, xxhash.xxh3_64_intdigest(bytes(12)))],
        [csr_entry("m", [2, 4], 0, 1, 2, 3)]), "row pointers must not decrease"),
}


@pytest.mark.parametrize("case", sorted(HOSTILE))
def test_hostile_files_are_rejected_in_small_bounded_memory(case, work):
    baseline_file = os.path.join(ROOT, "fixtures", "golden", "tiny.tess")
    _, baseline, _ = peak_rss_of([tessera_binary(), "verify", baseline_file])
    build, message = HOSTILE[case]
    path = work / "hostile.tess"
    path.write_bytes(build())
    assert path.stat().st_size < 100_000
    status, rss, stderr = peak_rss_of([tessera_binary(), "verify", path])
    assert status == 1 and message in stderr, stderr
    assert rss < baseline + 16 * 2**20, f"peak RSS {rss} bytes against {baseline} for a valid tiny file"


def kill_at_points(command, destination, previous, points=8):
    """Run `command` `points` times, SIGKILLing it at evenly spread moments of its run; after
    each the destination must hold the previous file's bytes or a complete, valid new file, and
    nothing else may be left in its folder (the file being written has no name)."""
    start = time.monotonic()
    subprocess.run(command, check=True, capture_output=True)
    duration = time.monotonic() - start
    outcomes = set()
    for k in range(points):
        destination.write_bytes(previous)
        process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        time.sleep(duration * (k + 0.5) / points)
        process.send_signal(signal.SIGKILL)
        process.wait()
        current = destination.read_bytes()
        if current == previous:
            outcomes.add("previous")
        else:
            verify = tessera("verify", destination, check=False) if destination.suffix == ".tess" else None
            assert verify is None or verify.returncode == 0, f"kill {k}: a corrupt file under the final name"
            outcomes.add("new")
        leftovers = [p.name for p in destination.parent.glob(f".{destination.name}.tmp-*")]
        assert not leftovers, f"kill {k} left temporary files: {leftovers}"
    return outcomes


@pytest.mark.parametrize("command", ["convert", "pack", "unpack"])
def test_sigkill_never_leaves_a_half_written_file(command, work):
    previous = open(os.path.join(ROOT, "fixtures", "golden", "tiny.tess"), "rb").read()
    plain, packed = work / "plain.tess", work / "packed.tess"
    tessera("convert", minilm_path(), "-o", plain, "--compress", "none")
    tessera("pack", plain, "-o", packed)
    out = work / "out.tess"
    args = {"convert": ["convert", minilm_path(), "-o", out, "--force", "--quiet"],
            "pack": ["pack", plain, "-o", out, "--force"],
            "unpack": ["unpack", packed, "-o", out, "--force"]}[command]
    outcomes = kill_at_points([tessera_binary(), *map(str, args)], out, previous)
    assert "previous" in outcomes  # the kills did land mid-run
