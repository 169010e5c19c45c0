"""`t38gw serve` refuses to half-start: a bad config exits 2 naming the key, a taken port exits 1."""

from __future__ import annotations

import json
import socket
import subprocess
import sys

from tests.conftest import REPO


def serve(config_text: str, tmp_path, timeout: float = 30) -> subprocess.CompletedProcess:
    path = tmp_path / "t38gw.toml"
    path.write_text(config_text)
    return subprocess.run([sys.executable, "-m", "t38gw.cli", "serve", "--config", str(path)],
                          capture_output=True, text=True, timeout=timeout, cwd=tmp_path,
                          env={"PATH": "/usr/bin:/bin", "PYTHONPATH": str(REPO)})


def config(tmp_path, sip_port: int, http_port: int) -> str:
    return f"""
spool = "{tmp_path / 'spool.db'}"
[sip]
listen = ["udp:127.0.0.1:{sip_port}"]
[t38]
udptl_ports = "45000-45010"
[archive]
dir = "{tmp_path / 'archive'}"
[http]
listen = "127.0.0.1:{http_port}"
"""


def test_bad_config_exits_2_naming_the_key(tmp_path):
    result = serve('[t38]\nmax_datagram = 5\n', tmp_path)
    assert result.returncode == 2
    assert "t38.max_datagram" in result.stderr


def test_taken_sip_port_exits_1_and_leaves_nothing_running(tmp_path):
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as taken, \
            socket.socket(socket.AF_INET, socket.SOCK_STREAM) as api_probe:
        taken.bind(("127.0.0.1", 0))
        api_probe.bind(("127.0.0.1", 0))
        http_port = api_probe.getsockname()[1]
        api_probe.close()
        result = serve(config(tmp_path, taken.getsockname()[1], http_port), tmp_path)
    assert result.returncode == 1, result.stderr
    [failure] = [json.loads(line) for line in result.stderr.splitlines()
                 if line.startswith("{") and '"startup_failed"' in line]
    assert failure["error"].startswith("sip.listen: cannot bind")
    assert "gateway_started" not in result.stderr
    # Nothing is left listening on the API port.
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        assert probe.connect_ex(("127.0.0.1", http_port)) != 0


def test_taken_api_port_exits_1(tmp_path):
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as taken, \
            socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sip_probe:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        sip_probe.bind(("127.0.0.1", 0))
        sip_port = sip_probe.getsockname()[1]
        sip_probe.close()
        result = serve(config(tmp_path, sip_port, taken.getsockname()[1]), tmp_path)
    assert result.returncode == 1, result.stderr
    assert "http.listen: cannot bind" in result.stderr
