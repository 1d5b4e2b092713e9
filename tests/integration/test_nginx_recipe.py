"""The shipped nginx configuration, run by a real nginx: what it passes on, what it refuses.

A self-signed certificate stands in for the placeholder paths, free ports for 443 and Synapse's
client listener, and a small HTTP server for Synapse, recording what reaches it. Without nginx
or openssl the tests are skipped, except under ``CI=true`` where they fail: CI installs nginx.
"""

from __future__ import annotations

import http.client
import json
import os
import shutil
import socket
import ssl
import subprocess
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from e2ecounsel.homeserver import free_port

SHIPPED = Path(__file__).resolve().parents[2] / "docs" / "nginx-e2ecounsel.conf"
SYNAPSE = "127.0.0.1:8008"
FEDERATION_OFF = "# location ~ ^/_matrix/(federation|key)/ { return 404; }"


def _tools() -> tuple[str, str]:
    nginx = shutil.which("nginx") or shutil.which("nginx", path="/usr/sbin:/sbin")
    openssl = shutil.which("openssl")
    if nginx and openssl:
        return nginx, openssl
    missing = "nginx" if not nginx else "openssl"
    if os.environ.get("CI") == "true":
        pytest.fail(f"the nginx recipe cannot be tested: {missing} not found (CI installs nginx)")
    pytest.skip(f"the nginx recipe is not tested: {missing} not found; apt-get install nginx")


@dataclass
class Upstream:
    """Stands in for Synapse: answers 200 to everything and records what reached it."""

    seen: list[tuple[str, dict[str, str]]] = field(default_factory=list)

    def paths(self) -> list[str]:
        return [path for path, _ in self.seen]


def _serve(upstream: Upstream) -> ThreadingHTTPServer:
    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            upstream.seen.append((self.path, dict(self.headers)))
            body = b'{"versions": ["v1.11"]}'
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, format: str, *args: object) -> None:
            """Quiet: the test reads ``seen``."""

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server


@dataclass
class Proxy:
    port: int
    upstream: Upstream

    def get(
        self, host: str, path: str, headers: dict[str, str] | None = None
    ) -> tuple[int, dict[str, str], bytes]:
        context = ssl.create_default_context()
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
        conn = http.client.HTTPSConnection("127.0.0.1", self.port, context=context, timeout=10)
        try:
            conn.request("GET", path, headers={"Host": host, **(headers or {})})
            resp = conn.getresponse()
            return resp.status, {k.lower(): v for k, v in resp.getheaders()}, resp.read()
        finally:
            conn.close()

    def upload_answer(self, size: int) -> str:
        """nginx's first status line for an upload of ``size`` bytes that waits for its go-ahead.

        With ``Expect: 100-continue`` nginx answers ``100 Continue`` when it would take the
        body, and refuses a body too large at once; the body itself is never sent.
        """
        context = ssl.create_default_context()
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
        with (
            socket.create_connection(("127.0.0.1", self.port), timeout=10) as raw,
            context.wrap_socket(raw) as conn,
        ):
            conn.sendall(
                f"POST /_matrix/media/v3/upload HTTP/1.1\r\nHost: matrix.example.org\r\n"
                f"Content-Length: {size}\r\nExpect: 100-continue\r\n\r\n".encode()
            )
            return conn.recv(4096).decode().split("\r\n", 1)[0]


def _configure(tmp: Path, openssl: str, upstream_port: int, port: int, *, federation: bool) -> Path:
    """The shipped file with a self-signed certificate and test ports, inside a main config."""
    cert, key = tmp / "cert.pem", tmp / "key.pem"
    subprocess.run(
        [openssl, "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1"]
        + ["-keyout", str(key), "-out", str(cert), "-subj", "/CN=matrix.example.org"],
        check=True,
        capture_output=True,
    )
    text = SHIPPED.read_text(encoding="utf-8")
    for name in ("matrix.example.org", "example.org"):
        live = f"/etc/letsencrypt/live/{name}"
        assert f"{live}/fullchain.pem" in text and f"{live}/privkey.pem" in text
        text = text.replace(f"{live}/fullchain.pem", str(cert))
        text = text.replace(f"{live}/privkey.pem", str(key))
    assert text.count("listen 443 ssl;") == 2 and SYNAPSE in text and FEDERATION_OFF in text
    text = text.replace("    listen [::]:443 ssl;\n", "")  # the test box may have no IPv6
    text = text.replace("listen 443 ssl;", f"listen 127.0.0.1:{port} ssl;")
    text = text.replace(SYNAPSE, f"127.0.0.1:{upstream_port}")
    if not federation:
        text = text.replace(FEDERATION_OFF, FEDERATION_OFF.removeprefix("# "))
    (tmp / "e2ecounsel.conf").write_text(text, encoding="utf-8")
    for temp in ("body", "proxy", "fastcgi", "uwsgi", "scgi"):
        (tmp / temp).mkdir()
    main = tmp / "nginx.conf"
    main.write_text(
        f"daemon off;\nmaster_process off;\npid {tmp}/nginx.pid;\nevents {{}}\nhttp {{\n"
        f"    access_log off;\n    client_body_temp_path {tmp}/body;\n"
        f"    proxy_temp_path {tmp}/proxy;\n    fastcgi_temp_path {tmp}/fastcgi;\n"
        f"    uwsgi_temp_path {tmp}/uwsgi;\n    scgi_temp_path {tmp}/scgi;\n"
        f"    include {tmp}/e2ecounsel.conf;\n}}\n",
        encoding="utf-8",
    )
    return main


def _start(tmp: Path, *, federation: bool) -> Iterator[Proxy]:
    nginx, openssl = _tools()
    upstream = Upstream()
    server = _serve(upstream)
    port = free_port()
    main = _configure(tmp, openssl, server.server_address[1], port, federation=federation)
    argv = [nginx, "-p", str(tmp), "-c", str(main), "-e", str(tmp / "error.log")]
    checked = subprocess.run([*argv, "-t"], capture_output=True, text=True, check=False)
    assert checked.returncode == 0, checked.stderr
    assert "test is successful" in checked.stderr
    proc = subprocess.Popen(argv, stderr=subprocess.PIPE)
    try:
        proxy = Proxy(port, upstream)
        deadline = time.monotonic() + 10
        while True:
            try:
                proxy.get("matrix.example.org", "/")
                break
            except OSError:
                assert proc.poll() is None, (tmp / "error.log").read_text()
                assert time.monotonic() < deadline, "nginx did not start"
                time.sleep(0.1)
        yield proxy
    finally:
        proc.terminate()
        proc.wait(10)
        server.shutdown()


@pytest.fixture
def proxy(tmp_path: Path) -> Iterator[Proxy]:
    yield from _start(tmp_path, federation=True)


@pytest.fixture
def proxy_no_federation(tmp_path: Path) -> Iterator[Proxy]:
    yield from _start(tmp_path, federation=False)


def test_client_api_passes_admin_api_does_not(proxy: Proxy) -> None:
    host = "matrix.example.org"
    status, _, body = proxy.get(host, "/_matrix/client/versions", {"X-Forwarded-For": "6.6.6.6"})
    assert status == 200 and json.loads(body) == {"versions": ["v1.11"]}
    path, headers = proxy.upstream.seen[-1]
    assert path == "/_matrix/client/versions"
    # A client's own X-Forwarded-For is replaced, never passed on: Synapse sees the real peer.
    assert headers["X-Forwarded-For"] == "127.0.0.1"
    assert headers["X-Forwarded-Proto"] == "https" and headers["Host"] == host

    # An encoded room id reaches Synapse as it was sent.
    encoded = "/_matrix/client/v3/rooms/%21abc%3Aexample.org/state/m.room.name/"
    assert proxy.get(host, encoded)[0] == 200
    assert proxy.upstream.paths()[-1] == encoded
    assert proxy.get(host, "/_synapse/client/password_reset/email/submit_token")[0] == 200
    assert proxy.get(host, "/_matrix/federation/v1/version")[0] == 200

    before = len(proxy.upstream.seen)
    for refused in ("/_synapse/admin/v1/register", "/_synapse/admin/v1/server_version", "/"):
        assert proxy.get(host, refused)[0] == 404, refused
    assert len(proxy.upstream.seen) == before, proxy.upstream.paths()[before:]

    # Up to Synapse's max_upload_size (50M) an upload may go on; beyond it nginx refuses.
    assert proxy.upload_answer(49 * 1024 * 1024) == "HTTP/1.1 100 Continue"
    assert proxy.upload_answer(51 * 1024 * 1024).startswith("HTTP/1.1 413 ")
    assert len(proxy.upstream.seen) == before


def test_well_known_delegation(proxy: Proxy) -> None:
    status, headers, body = proxy.get("example.org", "/.well-known/matrix/client")
    assert status == 200 and headers["content-type"] == "application/json"
    assert headers["access-control-allow-origin"] == "*"
    assert json.loads(body) == {"m.homeserver": {"base_url": "https://matrix.example.org"}}
    status, headers, body = proxy.get("example.org", "/.well-known/matrix/server")
    assert status == 200 and json.loads(body) == {"m.server": "matrix.example.org:443"}
    assert proxy.upstream.seen == []


def test_federation_off(proxy_no_federation: Proxy) -> None:
    proxy = proxy_no_federation
    host = "matrix.example.org"
    assert proxy.get(host, "/_matrix/federation/v1/version")[0] == 404
    assert proxy.get(host, "/_matrix/key/v2/server")[0] == 404
    assert proxy.upstream.seen == []
    assert proxy.get(host, "/_matrix/client/versions")[0] == 200
