"""Shipping models through a real OCI registry (Debian's docker-registry on loopback): push and
pull byte-identical, only changed tensors cross the network, tampering and untrusted releases are
refused with nothing written, interrupted pulls resume, auth works, and skopeo agrees."""
import base64
import glob
import json
import os
import shutil
import signal
import subprocess
import time

import numpy as np
import onnx
import pytest
from onnx import numpy_helper

from conftest import ROOT, tessera, tessera_binary
from registry_fixtures import Proxy, Registry
from test_onnx_roundtrip import minilm_path

FIXTURES = os.path.join(ROOT, "fixtures", "onnx")


@pytest.fixture(scope="module")
def registry(tmp_path_factory):
    r = Registry(str(tmp_path_factory.mktemp("registry")))
    yield r
    r.stop()


@pytest.fixture(scope="module")
def minilm_versions(tmp_path_factory):
    """MiniLM converted losslessly (v1), and v2 where only the last encoder layer's weights changed."""
    folder = tmp_path_factory.mktemp("minilm")
    source = minilm_path()
    model = onnx.load(source)
    last = {i for n in model.graph.node if "layer.2" in n.name or any("layer.2" in o for o in n.output) for i in n.input}
    changed = 0
    rng = np.random.default_rng(0)
    for init in model.graph.initializer:
        if init.name in last or "layer.2" in init.name:
            w = numpy_helper.to_array(init)
            if w.dtype == np.float32 and w.size > 1:
                init.CopyFrom(numpy_helper.from_array((w + rng.normal(0, 1e-3, w.shape)).astype(np.float32), init.name))
                changed += w.size
    assert changed > 1_000_000
    v2_source = str(folder / "v2.onnx")
    onnx.save(model, v2_source)
    v1, v2 = str(folder / "v1.tess"), str(folder / "v2.tess")
    tessera("convert", source, "-o", v1, "--quiet")
    tessera("convert", v2_source, "-o", v2, "--quiet")
    return v1, v2


@pytest.fixture(scope="module")
def digits(tmp_path_factory):
    folder = tmp_path_factory.mktemp("digits")
    path = str(folder / "digits.tess")
    tessera("convert", os.path.join(FIXTURES, "digits_mlp.onnx"), "-o", path, "--quiet")
    return path


def push(path, ref, *extra):
    return tessera("push", path, ref, "--insecure", *extra).stdout


def manifest_digest(output):
    return output.split("manifest ")[1].split(",")[0]


def sent_bytes(output):
    return float(output.split("sent ")[1].split(" MB")[0]) * 1e6


def same_file(a, b):
    with open(a, "rb") as f, open(b, "rb") as g:
        return f.read() == g.read()


def refused(result, *words):
    """One line on stderr, exit 1, naming what went wrong."""
    assert result.returncode == 1, result.stdout + result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("tessera: error:"), result.stderr
    for w in words:
        assert w in lines[0], lines[0]


def test_distribution_minilm_second_version_sends_only_its_changed_tensors_and_pulls_byte_identical(registry, minilm_versions, tmp_path):
    v1, v2 = minilm_versions
    ref = f"{registry.host}/models/minilm"
    first = push(v1, f"{ref}:v1")
    assert sent_bytes(first) >= 0.99 * os.path.getsize(v1)
    before = registry.blob_files()
    second = push(v2, f"{ref}:v2")
    stored = sum(size for d, size in registry.blob_files().items() if d not in before)
    size = os.path.getsize(v2)
    assert stored <= 0.15 * size, f"second version stored {stored} of {size} bytes"
    assert sent_bytes(second) <= 0.15 * size
    # The same file pushes the same manifest (no timestamps), and sends nothing new.
    again = push(v2, f"{ref}:v2-again")
    assert manifest_digest(again) == manifest_digest(second)
    assert sent_bytes(again) < 20_000

    out = str(tmp_path / "v2.tess")
    tessera("pull", f"{ref}:v2", "--insecure", "-o", out)
    assert same_file(out, v2)
    # By digest, too.
    by_digest = str(tmp_path / "v2-digest.tess")
    tessera("pull", f"{ref}@{manifest_digest(second)}", "--insecure", "-o", by_digest)
    assert same_file(by_digest, v2)
    # The zero-copy form equals `tessera unpack` of the same file.
    unpacked, expected = str(tmp_path / "v2-zero-copy.tess"), str(tmp_path / "expected.tess")
    tessera("pull", f"{ref}:v2", "--insecure", "-o", unpacked, "--unpack")
    tessera("unpack", v2, "-o", expected)
    assert same_file(unpacked, expected)


def test_mount_from_another_repository_sends_no_tensor(registry, digits):
    push(digits, f"{registry.host}/team-a/digits:v1")
    out = push(digits, f"{registry.host}/team-b/digits:v1", "--mount-from", "team-a/digits")
    layers = int(out.split(" layers (")[0].rsplit(", ", 1)[1])
    assert f"{layers} mounted" in out and sent_bytes(out) < 5_000


def test_distribution_minilm_pull_with_base_takes_unchanged_tensors_from_the_installed_file(registry, minilm_versions, tmp_path):
    v1, v2 = minilm_versions
    ref = f"{registry.host}/models/minilm-base"
    push(v1, f"{ref}:v1")
    push(v2, f"{ref}:v2")
    installed = str(tmp_path / "installed.tess")
    tessera("pull", f"{ref}:v1", "--insecure", "-o", installed)
    proxy = Proxy(registry.host)
    try:
        for base_form in ("packed", "zero-copy"):
            base = installed
            if base_form == "zero-copy":
                base = str(tmp_path / "installed-zero-copy.tess")
                tessera("unpack", installed, "-o", base)
            out = str(tmp_path / f"v2-{base_form}.tess")
            proxy.ranges.clear()
            r = tessera("pull", f"{proxy.host}/models/minilm-base:v2", "--insecure", "-o", out, "--base", base)
            assert same_file(out, v2)
            assert "taken from" in r.stdout
            received = float(r.stdout.split("MB received")[0].rsplit(", ", 1)[1]) * 1e6
            assert received <= 0.15 * os.path.getsize(v2), r.stdout
    finally:
        proxy.stop()


def test_distribution_minilm_subset_pull_holds_only_matching_tensors(registry, minilm_versions, tmp_path):
    v1, _ = minilm_versions
    ref = f"{registry.host}/models/minilm-subset:v1"
    push(v1, ref)
    out = str(tmp_path / "subset.tess")
    tessera("pull", ref, "--insecure", "-o", out, "--tensors", "*layer.0.*")
    text = tessera("inspect", out, "--json").stdout
    names = [t["name"] for t in json.loads(text)["tensors"]]
    assert names and all("layer.0." in n for n in names)
    r = tessera("pull", ref, "--insecure", "-o", str(tmp_path / "none.tess"), "--tensors", "no-such-*", check=False)
    refused(r, "no tensor", "no-such-*")
    assert not os.path.exists(tmp_path / "none.tess")


def test_a_blob_altered_in_storage_fails_the_pull_and_writes_nothing(registry, digits, tmp_path_factory, tmp_path):
    # Blobs are shared by every repository of a registry: this test's are its own (another zstd level).
    own = str(tmp_path_factory.mktemp("tamper") / "digits-9.tess")
    tessera("pack", digits, "-o", own, "--level", "9")
    ref = f"{registry.host}/models/digits-tamper:v1"
    push(own, ref)
    manifest = json.loads(subprocess.run(["skopeo", "inspect", "--raw", "--tls-verify=false", f"docker://{ref}"],
                                         capture_output=True, text=True, check=True).stdout)
    layer = max(manifest["layers"][1:], key=lambda l: l["size"])
    path = registry.blob_path(layer["digest"].split(":")[1])
    with open(path, "r+b") as f:
        f.seek(layer["size"] // 2)
        byte = f.read(1)
        f.seek(layer["size"] // 2)
        f.write(bytes([byte[0] ^ 0xFF]))
    target = str(tmp_path / "digits.tess")
    r = tessera("pull", ref, "--insecure", "-o", target, check=False)
    refused(r, layer["digest"], "corrupt or was altered")
    assert os.listdir(tmp_path) == []


def test_signed_releases_are_checked_before_anything_is_written(registry, digits, tmp_path):
    key_a, key_b = str(tmp_path / "a.key"), str(tmp_path / "b.key")
    tessera("keygen", "-o", key_a)
    tessera("keygen", "-o", key_b)
    assert oct(os.stat(key_a).st_mode & 0o777) == "0o600"
    state = str(tmp_path / "state.json")
    ref = f"{registry.host}/models/digits-signed"
    out1 = push(digits, f"{ref}:v1", "--sign", key_a)
    assert "signed release 1" in out1
    site = tmp_path / "site"
    site.mkdir()
    good = str(site / "digits.tess")
    r = tessera("pull", f"{ref}:v1", "--insecure", "-o", good, "--trust", key_a + ".pub", "--trust-state", state)
    assert "signed release 1 verified" in r.stdout
    assert same_file(good, digits) and os.path.exists(good + ".sig")
    # Offline check of the installed file, in either form.
    v = tessera("verify", good, "--signature", "--trust", key_a + ".pub")
    assert "signature OK" in v.stdout
    refused(tessera("verify", good, "--signature", "--trust", key_b + ".pub", check=False), "not a trusted key")
    # A subset is checked tensor by tensor, and so is its offline verification.
    part = str(site / "part.tess")
    tessera("pull", f"{ref}:v1", "--insecure", "-o", part, "--tensors", "intercepts*", "--trust", key_a + ".pub", "--trust-state", state)
    assert "3 of 8 signed tensors present" in tessera("verify", part, "--signature", "--trust", key_a + ".pub").stdout
    os.remove(part)
    os.remove(part + ".sig")

    # Another key, and an unsigned model: refused, nothing written.
    bad = str(site / "bad.tess")
    refused(tessera("pull", f"{ref}:v1", "--insecure", "-o", bad, "--trust", key_b + ".pub", "--trust-state", state, check=False),
            "not a trusted key")
    # (Another model: a signature names a manifest, so the same file under any tag is signed.)
    push(os.path.join(ROOT, "fixtures", "golden", "tiny.tess"), f"{ref}:unsigned")
    refused(tessera("pull", f"{ref}:unsigned", "--insecure", "-o", bad, "--trust", key_a + ".pub", "--trust-state", state, check=False),
            "not signed")
    assert sorted(os.listdir(site)) == ["digits.tess", "digits.tess.sig"]

    # A newer release is accepted; then the tag moved back to the old release is a rollback.
    v2 = str(tmp_path / "digits-v2.tess")
    tessera("unpack", digits, "-o", v2)
    out2 = push(v2, f"{ref}:latest", "--sign", key_a)
    assert "signed release 2" in out2
    tessera("pull", f"{ref}:latest", "--insecure", "-o", str(site / "v2.tess"), "--trust", key_a + ".pub", "--trust-state", state)
    subprocess.run(["skopeo", "copy", "--quiet", "--src-tls-verify=false", "--dest-tls-verify=false",
                    f"docker://{ref}:v1", f"docker://{ref}:latest"], check=True)
    refused(tessera("pull", f"{ref}:latest", "--insecure", "-o", bad, "--trust", key_a + ".pub", "--trust-state", state, check=False),
            "rollback refused", "release 1", "release 2")

    # A release signed for another repository, copied here with its signature, is refused.
    other = f"{registry.host}/models/elsewhere"
    digest = manifest_digest(out1)
    sig_tag = "sha256-" + digest.split(":")[1] + ".sig"
    for tag in ("v1", sig_tag):
        subprocess.run(["skopeo", "copy", "--quiet", "--src-tls-verify=false", "--dest-tls-verify=false",
                        f"docker://{ref}:{tag}", f"docker://{other}:{tag}"], check=True)
    refused(tessera("pull", f"{other}:v1", "--insecure", "-o", bad, "--trust", key_a + ".pub", "--trust-state", str(tmp_path / "s2.json"), check=False),
            "models/digits-signed", "models/elsewhere")
    assert not os.path.exists(bad)


def test_distribution_minilm_a_pull_killed_halfway_resumes_with_range_requests(registry, minilm_versions, tmp_path):
    v1, _ = minilm_versions
    push(v1, f"{registry.host}/models/minilm-resume:v1")
    slow = Proxy(registry.host, delay=0.02)
    out = str(tmp_path / "model.tess")
    work = str(tmp_path / ".model.tess.pull")
    try:
        p = subprocess.Popen([tessera_binary(), "pull", f"{slow.host}/models/minilm-resume:v1", "--insecure", "-o", out, "--jobs", "1"],
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        deadline = time.time() + 60
        while time.time() < deadline:
            partial = [f for f in glob.glob(work + "/*.partial") if os.path.getsize(f) > 1_000_000]
            if partial:
                break
            time.sleep(0.05)
        assert partial, "the pull never got a megabyte into a blob"
        p.send_signal(signal.SIGKILL)
        p.wait()
    finally:
        slow.stop()
    assert not os.path.exists(out)
    kept = os.path.getsize(partial[0])
    proxy = Proxy(registry.host)
    try:
        tessera("pull", f"{proxy.host}/models/minilm-resume:v1", "--insecure", "-o", out)
        assert f"bytes={kept}-" in proxy.ranges
    finally:
        proxy.stop()
    assert same_file(out, v1)
    assert not os.path.exists(work)


def test_a_connection_cut_mid_blob_is_resumed_in_the_same_pull(registry, digits, tmp_path):
    push(digits, f"{registry.host}/models/digits-cut:v1")
    proxy = Proxy(registry.host, cut_after=5000)
    try:
        out = str(tmp_path / "digits.tess")
        tessera("pull", f"{proxy.host}/models/digits-cut:v1", "--insecure", "-o", out)
        assert same_file(out, digits)
        assert proxy.cut and "bytes=5000-" in proxy.ranges
    finally:
        proxy.stop()


def test_skopeo_reads_what_was_pushed_and_the_oci_layout_round_trips(registry, digits, tmp_path):
    ref = f"{registry.host}/models/digits-oci:v1"
    out = push(digits, ref)
    raw = subprocess.run(["skopeo", "inspect", "--raw", "--tls-verify=false", f"docker://{ref}"],
                         capture_output=True, check=True).stdout
    import hashlib
    assert "sha256:" + hashlib.sha256(raw).hexdigest() == manifest_digest(out)
    manifest = json.loads(raw)
    assert manifest["artifactType"] == "application/vnd.tessera.model.v1"
    assert all("org.opencontainers.image.title" in l["annotations"] for l in manifest["layers"])
    # Registry -> OCI layout by skopeo -> tessera pull --oci-layout.
    layout = str(tmp_path / "layout")
    subprocess.run(["skopeo", "copy", "--quiet", "--src-tls-verify=false", f"docker://{ref}", f"oci:{layout}:v1"], check=True)
    pulled = str(tmp_path / "from-layout.tess")
    tessera("pull", "--oci-layout", layout, "-o", pulled)
    assert same_file(pulled, digits)
    # tessera push --oci-layout -> skopeo copy to the registry -> tessera pull.
    mine = str(tmp_path / "mine")
    tessera("push", digits, "--oci-layout", mine, "--tag", "v7")
    subprocess.run(["skopeo", "copy", "--quiet", "--dest-tls-verify=false", f"oci:{mine}:v7", f"docker://{registry.host}/models/digits-air:v7"], check=True)
    again = str(tmp_path / "again.tess")
    tessera("pull", f"{registry.host}/models/digits-air:v7", "--insecure", "-o", again)
    assert same_file(again, digits)


def test_basic_auth_from_the_environment_or_a_credentials_file(tmp_path, digits):
    secured = Registry(str(tmp_path / "secured"), htpasswd_user=("site", "s3cret"))
    try:
        ref = f"{secured.host}/models/digits:v1"
        refused(tessera("push", digits, ref, "--insecure", check=False), "requires credentials")
        env = dict(os.environ, TESSERA_REGISTRY_USERNAME="site", TESSERA_REGISTRY_PASSWORD="s3cret")
        r = subprocess.run([tessera_binary(), "push", digits, ref, "--insecure"], env=env, capture_output=True, text=True)
        assert r.returncode == 0, r.stderr
        config = tmp_path / "config.json"
        config.write_text(json.dumps({"auths": {secured.host: {"auth": base64.b64encode(b"site:s3cret").decode()}}}))
        out = str(tmp_path / "pulled.tess")
        tessera("pull", ref, "--insecure", "-o", out, "--credentials", str(config))
        assert same_file(out, digits)
        config.write_text(json.dumps({"auths": {secured.host: {"auth": base64.b64encode(b"site:wrong").decode()}}}))
        refused(tessera("pull", ref, "--insecure", "-o", str(tmp_path / "x.tess"), "--credentials", str(config), check=False),
                "refused", "credentials")
    finally:
        secured.stop()


def test_https_is_the_default_and_an_untrusted_certificate_is_refused(tmp_path, digits):
    secured = Registry(str(tmp_path / "tls"), tls=True)
    try:
        refused(tessera("push", digits, f"{secured.host}/models/digits:v1", check=False), "SSL certificate problem", "not trusted")
        assert secured.blob_files() == {}
        # --insecure means plain HTTP, never "HTTPS without checking".
        refused(tessera("push", digits, f"{secured.host}/models/digits:v1", "--insecure", "--attempts", "1", check=False), "HTTP 400")
        assert secured.blob_files() == {}
    finally:
        secured.stop()


def test_bearer_token_challenge(registry, digits, tmp_path):
    proxy = Proxy(registry.host, token="t0ken", credentials=("site", "pw"))
    try:
        ref = f"{proxy.host}/models/digits-bearer:v1"
        env = dict(os.environ, TESSERA_REGISTRY_USERNAME="site", TESSERA_REGISTRY_PASSWORD="pw")
        r = subprocess.run([tessera_binary(), "push", digits, ref, "--insecure"], env=env, capture_output=True, text=True)
        assert r.returncode == 0, r.stderr
        assert "Bearer t0ken" in proxy.authorizations
        refused(tessera("pull", ref, "--insecure", "-o", str(tmp_path / "x.tess"), check=False), "token service", "no credentials")
        out = str(tmp_path / "pulled.tess")
        r = subprocess.run([tessera_binary(), "pull", ref, "--insecure", "-o", out], env=env, capture_output=True, text=True)
        assert r.returncode == 0, r.stderr
        assert same_file(out, digits)
    finally:
        proxy.stop()


def test_user_errors_are_one_line_with_nothing_written(registry, digits, tmp_path):
    out = str(tmp_path / "out.tess")
    closed = f"127.0.0.1:{__import__('registry_fixtures').free_port()}"
    refused(tessera("push", digits, f"{closed}/m:v1", "--insecure", "--attempts", "1", check=False), "cannot reach", closed)
    refused(tessera("pull", f"{closed}/m:v1", "--insecure", "--attempts", "1", "-o", out, check=False), "cannot reach")
    refused(tessera("push", digits, "no-repository", check=False), "not a registry reference")
    refused(tessera("pull", f"{registry.host}/models/exists:v1", "-o", out, check=False), "plain HTTP", "--insecure")
    stalled = Proxy(registry.host, delay=3)
    try:
        push(digits, f"{registry.host}/models/stall:v1")
        start = time.time()
        refused(tessera("pull", f"{stalled.host}/models/stall:v1", "--insecure", "-o", out, "--stall-timeout", "1", "--attempts", "2", check=False),
                "no data for 1.0 s")
        assert time.time() - start < 20
    finally:
        stalled.stop()
    shutil.rmtree(str(tmp_path / ".out.tess.pull"), ignore_errors=True)   # kept for a resume
    refused(tessera("push", digits, f"{registry.host}/Upper/Case:v1", "--insecure", check=False), "lowercase")
    refused(tessera("pull", f"{registry.host}/models/absent:v1", "--insecure", "-o", out, check=False), "no manifest")
    refused(tessera("push", str(tmp_path / "missing.tess"), f"{registry.host}/m:v1", "--insecure", check=False), "missing.tess")
    refused(tessera("push", digits, f"{registry.host}/m:v1", "--insecure", "--sign", str(tmp_path / "nokey"), check=False), "nokey")
    # Not a Tessera artifact: the signature manifest of nothing, pushed by hand.
    push(digits, f"{registry.host}/models/exists:v1")
    open(out, "w").write("keep")
    refused(tessera("pull", f"{registry.host}/models/exists:v1", "--insecure", "-o", out, check=False), "already exists")
    assert open(out).read() == "keep"
    assert sorted(os.listdir(tmp_path)) == ["out.tess"]
