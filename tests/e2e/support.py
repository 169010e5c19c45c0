"""A ``t38gw serve`` subprocess with a temp config, a webhook receiver, and page checks."""

from __future__ import annotations

import base64
import json
import os
import random
import signal
import socket
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import httpx

from tests.conftest import REPO
from tests.peers.spandsp import read_fax_tiff

SECRET = "whsec_" + base64.b64encode(b"e2e-test-secret-key-0123456789").decode()
START_TIMEOUT = 20.0


def free_port(kind: int = socket.SOCK_DGRAM) -> int:
    """A port free for both UDP and TCP on 127.0.0.1 (bounded tries)."""
    for _ in range(100):
        with socket.socket(socket.AF_INET, kind) as probe:
            probe.bind(("127.0.0.1", 0))
            port = probe.getsockname()[1]
        other = socket.SOCK_STREAM if kind == socket.SOCK_DGRAM else socket.SOCK_DGRAM
        with socket.socket(socket.AF_INET, other) as probe:
            try:
                probe.bind(("127.0.0.1", port))
            except OSError:
                continue
        return port
    raise RuntimeError("no free port found")


class PortTaken(Exception):
    pass


@dataclass
class Received:
    headers: dict
    body: bytes
    at: float
    answered: int


class WebhookReceiver:
    """A local HTTP server that records webhook POSTs.  ``status`` is what it answers."""

    def __init__(self, port: int | None = None) -> None:
        self.port = port or free_port(socket.SOCK_STREAM)
        self.status = 200
        self.posts: list[Received] = []
        self._lock = threading.Lock()
        self._server: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/fax"

    def start(self) -> WebhookReceiver:
        owner = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # noqa: N802 (http.server's naming)
                length = int(self.headers.get("content-length", "0"))
                body = self.rfile.read(length)
                with owner._lock:
                    status = owner.status
                    owner.posts.append(Received({k.lower(): v for k, v in self.headers.items()}, body, time.time(),
                                                status))
                self.send_response(status)
                self.send_header("content-length", "0")
                self.end_headers()

            def log_message(self, *args) -> None:
                pass

        ThreadingHTTPServer.allow_reuse_address = True
        self._server = ThreadingHTTPServer(("127.0.0.1", self.port), Handler)
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None

    def wait_for(self, predicate, timeout: float) -> list[Received]:
        """Poll (bounded) until ``predicate(posts)`` holds; returns the posts."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            with self._lock:
                posts = list(self.posts)
            if predicate(posts):
                return posts
            time.sleep(0.1)
        with self._lock:
            return list(self.posts)


@dataclass
class GatewayProcess:
    workdir: Path
    extra_config: str = ""
    webhook_url: str | None = None
    reinvite_after: float = 0.0
    sip_extra: str = ""  # more [sip] keys
    t38_extra: str = ""  # more [t38] keys
    udptl_span: int = 200  # UDPTL ports in the range
    sip_port: int = field(default_factory=free_port)
    http_port: int = field(default_factory=lambda: free_port(socket.SOCK_STREAM))
    proc: subprocess.Popen | None = None
    log_path: Path | None = None

    def __post_init__(self) -> None:
        self.write_config()

    def write_config(self) -> None:
        base = random.Random().randrange(42000, 59000, 200)
        self.udptl_ports = (base, base + self.udptl_span - 1)
        self.config_path = self.workdir / "t38gw.toml"
        text = f"""
spool = "{self.workdir / 'spool.db'}"
[sip]
listen = ["udp:127.0.0.1:{self.sip_port}", "tcp:127.0.0.1:{self.sip_port}"]
t38_reinvite_after = {self.reinvite_after}
{self.sip_extra}
[t38]
udptl_ports = "{self.udptl_ports[0]}-{self.udptl_ports[1]}"
{self.t38_extra}
[fax]
local_ident = "+1 555 0100"
[archive]
dir = "{self.workdir / 'archive'}"
[http]
listen = "127.0.0.1:{self.http_port}"
"""
        if self.webhook_url:
            text += f'\n[[webhooks]]\nname = "default"\nurl = "{self.webhook_url}"\nsecret = "{SECRET}"\n'
        self.config_path.write_text(text + self.extra_config)

    @property
    def sip_address(self) -> tuple[str, int]:
        return ("127.0.0.1", self.sip_port)

    @property
    def api(self) -> str:
        return f"http://127.0.0.1:{self.http_port}"

    def start(self) -> GatewayProcess:
        """Start and wait (bounded) for ``gateway_started``.  A port we picked may have been
        taken by another process meanwhile (the gateway then exits 1): pick others, retry."""
        for _attempt in range(3):
            try:
                return self._start_once()
            except PortTaken:
                self.sip_port, self.http_port = free_port(), free_port(socket.SOCK_STREAM)
                self.write_config()
        return self._start_once()

    def _start_once(self) -> GatewayProcess:
        n = len(list(self.workdir.glob("gateway-*.log")))
        self.log_path = self.workdir / f"gateway-{n}.log"
        env = dict(os.environ, PYTHONPATH=str(REPO))
        self.proc = subprocess.Popen([sys.executable, "-m", "t38gw.cli", "serve", "--config", str(self.config_path)],
                                     stdout=subprocess.DEVNULL, stderr=open(self.log_path, "wb"), cwd=self.workdir,
                                     env=env)
        deadline = time.monotonic() + START_TIMEOUT
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                if self.proc.returncode == 1 and "cannot bind" in self.log_text():
                    raise PortTaken(self.log_text())
                raise RuntimeError(f"gateway exited {self.proc.returncode}:\n{self.log_text()}")
            if "gateway_started" in self.log_text():
                return self
            time.sleep(0.1)
        raise RuntimeError(f"gateway did not start within {START_TIMEOUT} s:\n{self.log_text()}")

    def log_text(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path and self.log_path.exists() else ""

    def log_events(self) -> list[dict]:
        events = []
        for line in self.log_text().splitlines():
            if line.startswith("{"):
                try:
                    events.append(json.loads(line))
                except ValueError:
                    pass
        return events

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 30.0) -> int | None:
        if self.proc is None or self.proc.poll() is not None:
            return self.proc.returncode if self.proc else None
        self.proc.send_signal(sig)
        try:
            return self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(10)
            return None

    def faxes(self) -> list[dict]:
        return httpx.get(f"{self.api}/v1/faxes", timeout=5).json()["faxes"]

    def meta(self, fax_id: str) -> dict:
        return httpx.get(f"{self.api}/v1/faxes/{fax_id}", timeout=5).json()

    def wait_for_faxes(self, count: int, timeout: float, final: bool = True) -> list[dict]:
        """Poll the API (bounded) until ``count`` faxes exist (and are finished)."""
        deadline = time.monotonic() + timeout
        faxes: list[dict] = []
        while time.monotonic() < deadline:
            faxes = self.faxes()
            metas = [self.meta(f["id"]) for f in faxes]
            if len(metas) >= count and (not final or all(not m.get("in_progress") for m in metas)):
                return metas
            time.sleep(0.2)
        raise AssertionError(f"expected {count} finished faxes, have {faxes}\n{self.log_text()[-4000:]}")

    def folder(self, meta: dict) -> Path:
        found = list((self.workdir / "archive").rglob(meta["id"]))
        assert len(found) == 1, found
        return found[0]


def tiff_pages(path: Path) -> list[tuple[bytes, int, int, float, float]]:
    return read_fax_tiff(path)


def pdf_page_sizes(path: Path) -> list[tuple[float, float]]:
    """Every page's size in points, from poppler's pdfinfo."""
    info = subprocess.run(["pdfinfo", "-f", "1", "-l", "9999", str(path)], check=True, timeout=60,
                          capture_output=True, text=True).stdout
    sizes = []
    for line in info.splitlines():
        if line.startswith("Page") and "size:" in line:
            parts = line.split("size:")[1].split()
            sizes.append((float(parts[0]), float(parts[2])))
    return sizes


def pdf_pages(path: Path, pages: list[tuple[int, int, float, float]], workdir: Path) -> list[tuple[bytes, int, int]]:
    """Rasterise each PDF page with poppler's pdftoppm back to fax pels: ``pages`` gives
    (width_px, height_px, x_dpi, y_dpi) per page.

    At exactly the fax resolution pdftoppm rounds the page up a pel (1728 pels at 204 dpi
    are 609.88 pt) and resamples, so a few thousand pels move; rendered at 4x and sampled
    at each pel's centre, the page comes back exactly when the PDF holds it exactly.
    """
    from PIL import Image

    out = []
    for number, (width, height, x_dpi, y_dpi) in enumerate(pages, 1):
        prefix = workdir / f"raster-{path.stem}-{number}-{random.Random().randrange(10**9)}"
        subprocess.run(["pdftoppm", "-mono", "-f", str(number), "-l", str(number), "-rx", str(4 * x_dpi),
                        "-ry", str(4 * y_dpi), str(path), str(prefix)], check=True, timeout=60, capture_output=True)
        [pbm] = sorted(workdir.glob(prefix.name + "*.pbm"))
        with Image.open(pbm) as image:
            pels = image.resize((width, height), Image.Resampling.NEAREST, box=(0, 0, 4 * width, 4 * height))
            out.append((pels.tobytes("raw", "1;I"), width, height))
        pbm.unlink()
    return out
