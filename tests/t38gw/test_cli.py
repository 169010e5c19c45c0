"""The command line contract of DESIGN.md: exit codes and JSON logs on stderr."""

import json
import socket
import subprocess
import sys


def run_cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "t38gw.cli", *args], capture_output=True, text=True, timeout=60)


def test_usage_error_exits_2():
    assert run_cli("no-such-command").returncode == 2


def test_version():
    result = run_cli("--version")
    assert result.returncode == 0
    assert result.stdout.startswith("t38gw ")


def test_logs_are_json_lines_on_stderr():
    result = run_cli("check-config", "/nonexistent/t38gw.toml")
    assert result.returncode == 2
    lines = [line for line in result.stderr.splitlines() if line.startswith("{")]
    assert lines, result.stderr
    event = json.loads(lines[0])
    assert {"event", "level", "timestamp"} <= event.keys()


# -- issue 9: secrets never echoed, bad secrets refused, a private umask ---------------------

import base64  # noqa: E402
import queue  # noqa: E402
import signal  # noqa: E402
import stat  # noqa: E402
import threading  # noqa: E402
import time  # noqa: E402

from tests.conftest import REPO  # noqa: E402
from tests.support.ports import free_range  # noqa: E402

WEBHOOK_KEY = base64.b64encode(b"k" * 32).decode()
SECRETS = {
    "webhook secret": WEBHOOK_KEY,
    "trunk password": "trunk-pass-Zx81",
    "digest user password": "user-pass-Qv27",
    "API token": "api-token-" + "a1" * 16,
    "URL credential": "url-pass-Mh55",
    "URL query": "query-token-Pk09",
}
SECRET_CONFIG = f"""
[sip]
allow_from = ["127.0.0.0/8"]
[[sip.trunks]]
name = "carrier"
registrar = "sip:sip.example.net"
username = "gw"
password = "{SECRETS['trunk password']}"
[[sip.users]]
username = "pbx"
password = "{SECRETS['digest user password']}"
[[webhooks]]
name = "default"
url = "https://hook:{SECRETS['URL credential']}@ehr.example.org/fax?token={SECRETS['URL query']}"
secret = "whsec_{WEBHOOK_KEY}"
[http]
tokens = ["{SECRETS['API token']}"]
"""


def test_check_config_never_prints_a_secret(tmp_path):
    path = tmp_path / "t38gw.toml"
    path.write_text(SECRET_CONFIG)
    result = run_cli("check-config", str(path))
    assert result.returncode == 0, result.stderr
    for what, secret in SECRETS.items():
        assert secret not in result.stdout + result.stderr, what
    assert "***" in result.stdout
    assert "ehr.example.org/fax" in result.stdout and "carrier" in result.stdout and "pbx" in result.stdout


def test_check_config_refuses_whsec_abc(tmp_path):
    # Issue 9 item 5: this secret used to pass, then crash the delivery loop on every start.
    path = tmp_path / "t38gw.toml"
    path.write_text('[[webhooks]]\nname = "default"\nurl = "https://ehr.example.org/fax"\nsecret = "whsec_abc"\n')
    result = run_cli("check-config", str(path))
    assert result.returncode == 2
    assert "webhooks[0].secret" in result.stderr and "Traceback" not in result.stderr


def test_check_config_refuses_a_short_token_without_echoing_it(tmp_path):
    path = tmp_path / "t38gw.toml"
    path.write_text('[http]\ntokens = ["hunter2"]\n')
    result = run_cli("check-config", str(path))
    assert result.returncode == 2
    assert "http.tokens" in result.stderr and "hunter2" not in result.stderr


UMASK_SCRIPT = """
import os, stat, sys
os.umask(0o022)
from t38gw.cli import private_umask
assert private_umask() == 0o022
open("file", "w").close()
os.mkdir("folder")
print(oct(stat.S_IMODE(os.stat("file").st_mode)), oct(stat.S_IMODE(os.stat("folder").st_mode)))
"""


def test_private_umask_makes_new_files_0600_and_folders_0700(tmp_path):
    result = subprocess.run([sys.executable, "-c", UMASK_SCRIPT], capture_output=True, text=True, timeout=60,
                            cwd=tmp_path, env={"PATH": "/usr/bin:/bin", "PYTHONPATH": str(REPO)})
    assert result.returncode == 0, result.stderr
    assert result.stdout.split() == ["0o600", "0o700"]


def test_serve_creates_nothing_readable_by_others(tmp_path):
    """``t38gw serve`` started with umask 022: everything it creates under its working
    folder (spool and its WAL, archive, audit log, ...) is private to its user."""
    low, high = free_range(8)
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind(("127.0.0.1", 0))
        http_port = probe.getsockname()[1]
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
        probe.bind(("127.0.0.1", 0))
        sip_port = probe.getsockname()[1]
    (tmp_path / "t38gw.toml").write_text(f"""
[sip]
listen = ["udp:127.0.0.1:{sip_port}"]
[t38]
udptl_ports = "{low}-{high}"
[http]
listen = "127.0.0.1:{http_port}"
""")
    work = tmp_path / "run"
    work.mkdir()
    process = subprocess.Popen([sys.executable, "-m", "t38gw.cli", "serve", "--config", str(tmp_path / "t38gw.toml")],
                               cwd=work, stderr=subprocess.PIPE, text=True, umask=0o022,
                               env={"PATH": "/usr/bin:/bin", "PYTHONPATH": str(REPO)})
    lines: queue.Queue[str] = queue.Queue()
    threading.Thread(target=lambda: [lines.put(line) for line in process.stderr], daemon=True).start()
    try:
        deadline = time.monotonic() + 30
        seen = []
        while not any('"gateway_started"' in line for line in seen):
            assert process.poll() is None, "".join(seen)
            try:
                seen.append(lines.get(timeout=max(0.1, deadline - time.monotonic())))
            except queue.Empty:
                raise AssertionError("no gateway_started within 30 s:\n" + "".join(seen)) from None
        # The process itself runs with umask 077 (Linux reports it in /proc/PID/status).
        umask = [line.split()[1] for line in open(f"/proc/{process.pid}/status") if line.startswith("Umask:")]
        assert umask == ["0077"]
        created = [p for p in work.rglob("*")]
        assert any(p.name == "spool.db" for p in created)
        loose = {str(p.relative_to(work)): oct(stat.S_IMODE(p.stat().st_mode)) for p in created
                 if stat.S_IMODE(p.stat().st_mode) & 0o077}
        assert loose == {}
    finally:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout=10)


def test_audit_verify_and_show(tmp_path):
    from t38gw.api import AuditLog

    log_path = tmp_path / "audit.jsonl"
    (tmp_path / "t38gw.toml").write_text(f'[archive]\naudit_log = "{log_path}"\n')
    audit = AuditLog(log_path)
    fax_a, fax_b = "0190f3b2-aaaa-7bbb-8ccc-00000000000a", "0190f3b2-aaaa-7bbb-8ccc-00000000000b"
    audit.write({"client": "127.0.0.1", "token_id": "loopback", "method": "GET", "path": "/v1/faxes",
                 "fax_id": None, "status": 200, "fax_ids": [fax_a, fax_b]})
    audit.write({"client": "127.0.0.1", "token_id": "loopback", "method": "GET", "path": f"/v1/faxes/{fax_b}",
                 "fax_id": fax_b, "status": 200})
    audit.close()
    config = str(tmp_path / "t38gw.toml")
    result = run_cli("audit", "verify", "--config", config)
    assert result.returncode == 0 and "2 entries in 1 file(s), hash chain intact" in result.stdout
    shown = run_cli("audit", "show", "--config", config, "--fax", fax_a)
    assert [json.loads(line)["path"] for line in shown.stdout.splitlines()] == ["/v1/faxes"]
    assert len(run_cli("audit", "show", "--config", config, "--fax", fax_b).stdout.splitlines()) == 2
    lines = log_path.read_text().splitlines()
    log_path.write_text(lines[1] + "\n")  # the first entry removed
    result = run_cli("audit", "verify", "--config", config)
    assert result.returncode == 1 and "line 1" in result.stderr
