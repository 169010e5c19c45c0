"""The command line contract of DESIGN.md: exit codes and JSON logs on stderr."""

import json
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
