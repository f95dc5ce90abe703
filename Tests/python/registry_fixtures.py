"""A real OCI registry for the distribution tests: Debian's `docker-registry` (CNCF Distribution
2.8) on 127.0.0.1 with its own config and storage in a temporary folder (the package's own
config listens on every interface: never used), and a small HTTP proxy in front of it that can
demand bearer tokens, cut a download short or slow it down, and records what it saw."""
import base64
import http.client
import http.server
import json
import os
import shutil
import socket
import subprocess
import threading
import time
import urllib.request
import warnings

with warnings.catch_warnings():
    warnings.simplefilter("ignore", DeprecationWarning)
    import crypt  # bcrypt for htpasswd, through libxcrypt (Python 3.11 has it; no extra package)


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Registry:
    def __init__(self, folder, htpasswd_user=None, tls=False):
        self.folder = folder
        self.storage = os.path.join(folder, "storage")
        self.port = free_port()
        self.host = f"127.0.0.1:{self.port}"
        os.makedirs(self.storage, exist_ok=True)
        auth = ""
        if htpasswd_user:
            user, password = htpasswd_user
            path = os.path.join(folder, "htpasswd")
            with open(path, "w") as f:
                f.write(f"{user}:{crypt.crypt(password, crypt.mksalt(crypt.METHOD_BLOWFISH))}\n")
            auth = f"auth: {{ htpasswd: {{ realm: tessera-test, path: {path} }} }}\n"
        tls_config = ""
        if tls:   # a certificate from a CA of the test's own, which the system does not trust
            run = lambda *a: subprocess.run(["openssl", *a], check=True, capture_output=True)
            ca, ca_key, key, csr, cert = (os.path.join(folder, n) for n in ("ca.pem", "ca.key", "srv.key", "srv.csr", "srv.pem"))
            ec = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes"]
            run("req", "-x509", *ec, "-keyout", ca_key, "-out", ca, "-days", "2", "-subj", "/CN=tessera test CA")
            run("req", *ec, "-keyout", key, "-out", csr, "-subj", "/CN=127.0.0.1")
            ext = os.path.join(folder, "ext")
            with open(ext, "w") as f:
                f.write("subjectAltName=IP:127.0.0.1\n")
            run("x509", "-req", "-in", csr, "-CA", ca, "-CAkey", ca_key, "-CAcreateserial", "-out", cert, "-days", "2", "-extfile", ext)
            tls_config = f", tls: {{ certificate: {cert}, key: {key} }}"
        config = os.path.join(folder, "config.yml")
        with open(config, "w") as f:
            f.write("version: 0.1\nlog: { level: error }\n"
                    f"storage: {{ filesystem: {{ rootdirectory: {self.storage} }}, delete: {{ enabled: true }} }}\n"
                    f"http: {{ addr: {self.host}{tls_config} }}\n" + auth)
        binary = shutil.which("docker-registry")
        assert binary, "docker-registry is installed by `make test` (Debian package docker-registry)"
        self.log = open(os.path.join(folder, "registry.log"), "w")
        self.process = subprocess.Popen([binary, "serve", config], stdout=self.log, stderr=subprocess.STDOUT)
        deadline = time.time() + 20
        while True:
            try:
                if tls:
                    socket.create_connection(("127.0.0.1", self.port), timeout=1).close()
                    break
                with urllib.request.urlopen(f"http://{self.host}/v2/", timeout=1):
                    break
            except urllib.error.HTTPError as e:
                if e.code == 401:   # up, and asking for credentials
                    break
            except OSError:
                pass
            assert self.process.poll() is None, open(os.path.join(folder, "registry.log")).read()
            assert time.time() < deadline, "docker-registry did not come up"
            time.sleep(0.1)

    def stop(self):
        self.process.terminate()
        try:
            self.process.wait(10)
        except subprocess.TimeoutExpired:
            self.process.kill()
        self.log.close()

    def blob_files(self):
        """{digest hex: size} of every blob the registry stores."""
        root = os.path.join(self.storage, "docker", "registry", "v2", "blobs", "sha256")
        out = {}
        for dirpath, _, files in os.walk(root):
            if "data" in files:
                out[os.path.basename(dirpath)] = os.path.getsize(os.path.join(dirpath, "data"))
        return out

    def blob_path(self, hex_digest):
        return os.path.join(self.storage, "docker", "registry", "v2", "blobs", "sha256", hex_digest[:2], hex_digest, "data")


class Proxy:
    """Forwards to `target`. Options: `token` (demand `Bearer token`, issued by /token to
    `credentials`), `cut_after` (first GET of each blob closes after that many body bytes),
    `delay` (seconds before each 64 KiB piece of a blob body)."""

    def __init__(self, target, token=None, credentials=None, cut_after=None, delay=0.0):
        self.target = target
        self.token = token
        self.credentials = credentials
        self.cut_after = cut_after
        self.delay = delay
        self.ranges = []          # Range headers of blob GETs
        self.authorizations = []  # Authorization headers seen on /v2/ requests
        self.cut = set()
        self.port = free_port()
        self.host = f"127.0.0.1:{self.port}"
        proxy = self

        class Handler(http.server.BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args):
                pass

            def do_GET(self): self.guarded()
            def do_HEAD(self): self.guarded()
            def do_PUT(self): self.guarded()
            def do_POST(self): self.guarded()
            def do_PATCH(self): self.guarded()
            def do_DELETE(self): self.guarded()

            def guarded(self):
                try:
                    self.forward()
                except (BrokenPipeError, ConnectionResetError):
                    pass   # the client went away (killed, or gave up on a stalled transfer)

            def reply(self, status, body=b"", headers=()):
                self.send_response(status)
                for k, v in headers:
                    self.send_header(k, v)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                if self.command != "HEAD":   # a body after HEAD would be read as the next response
                    self.wfile.write(body)

            def forward(self):
                if self.path.startswith("/token"):
                    expected = "Basic " + base64.b64encode(":".join(proxy.credentials).encode()).decode() if proxy.credentials else None
                    if expected and self.headers.get("Authorization") != expected:
                        return self.reply(401)
                    return self.reply(200, json.dumps({"token": proxy.token}).encode(), [("Content-Type", "application/json")])
                proxy.authorizations.append(self.headers.get("Authorization"))
                if proxy.token and self.headers.get("Authorization") != f"Bearer {proxy.token}":
                    challenge = f'Bearer realm="http://{proxy.host}/token",service="tessera-test",scope="repository:x:pull,push"'
                    return self.reply(401, b'{"errors":[{"code":"UNAUTHORIZED"}]}', [("WWW-Authenticate", challenge)])
                length = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(length) if length else None
                headers = {k: v for k, v in self.headers.items() if k.lower() not in ("authorization", "connection")}
                is_blob_get = self.command == "GET" and "/blobs/sha256:" in self.path
                if is_blob_get:
                    proxy.ranges.append(self.headers.get("Range"))
                upstream = http.client.HTTPConnection(proxy.target, timeout=30)
                upstream.request(self.command, self.path, body=body, headers=headers)
                response = upstream.getresponse()
                self.send_response(response.status)
                for k, v in response.getheaders():
                    if k.lower() not in ("connection", "transfer-encoding"):
                        self.send_header(k, v)
                data = response.read()
                if "Content-Length" not in dict(response.getheaders()):
                    self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                if self.command == "HEAD":
                    return
                cut = proxy.cut_after is not None and is_blob_get and self.path not in proxy.cut and len(data) > proxy.cut_after
                if cut:
                    proxy.cut.add(self.path)
                    self.wfile.write(data[:proxy.cut_after])
                    self.wfile.flush()
                    self.close_connection = True
                    self.connection.shutdown(socket.SHUT_RDWR)
                    return
                if is_blob_get and proxy.delay:
                    for i in range(0, len(data), 65536):
                        time.sleep(proxy.delay)
                        self.wfile.write(data[i:i + 65536])
                        self.wfile.flush()
                else:
                    self.wfile.write(data)

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", self.port), Handler)
        self.server.daemon_threads = True
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def stop(self):
        self.server.shutdown()
        self.server.server_close()
