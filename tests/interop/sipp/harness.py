"""Run one SIPp scenario from ``sipp-scenarios/`` against our test UA (``tools/testua.py``)
on 127.0.0.1, every wait bounded.  Used by the tests and runnable by hand:

    .venv/bin/python -m tests.interop.sipp.harness t38_first_invite
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

REPO = Path(__file__).resolve().parents[3]
SCENARIOS = REPO / "sipp-scenarios"


@dataclass(frozen=True)
class Case:
    scenario: str
    role: str  # "uac": SIPp calls our UA; "uas": SIPp waits, our UA acts
    ua_args: tuple[str, ...] = ()
    exit_when_done: bool = True
    transport: str = "udp"
    sipp_host: str = "127.0.0.1"  # SIPp's own address; 127.0.0.2 plays a peer outside allow_from
    sipp_args: tuple[str, ...] = ()  # "{target}" is replaced by the UA's host:port
    sipp_passes: bool = True  # False: the UA must make the scenario fail (a negative case)


_DIGEST_UA = ("--answer", "auto", "--allow-from", "127.0.0.1/32", "--auth-algorithm", "MD5")

CASES = {
    "t38_first_invite": Case("t38_first_invite", "uac", ("--answer", "auto")),
    "bye_mid_call": Case("bye_mid_call", "uac", ("--answer", "auto", "--hangup-after", "1")),
    "audio_then_our_reinvite": Case("audio_then_our_reinvite", "uac", ("--answer", "audio", "--reinvite-t38-after", "0.5")),
    "audio_then_peer_reinvite": Case("audio_then_peer_reinvite", "uac", ("--answer", "auto")),
    "reinvite_glare": Case("reinvite_glare", "uac", ("--answer", "audio", "--reinvite-t38-after", "0.5")),
    "cancel_before_answer": Case("cancel_before_answer", "uac", ("--answer", "auto", "--ring", "10")),
    "session_refresh_t38": Case("session_refresh_t38", "uac", ("--answer", "auto")),
    "options": Case("options", "uac", (), exit_when_done=False),
    "delayed_offer_t38": Case("delayed_offer_t38", "uac", ("--answer", "auto")),
    "t38_first_invite_tcp": Case("t38_first_invite", "uac", ("--answer", "auto"), transport="tcp"),
    "bye_mid_call_tcp": Case("bye_mid_call", "uac", ("--answer", "auto", "--hangup-after", "1"), transport="tcp"),
    "register_digest_uas": Case("register_digest_uas", "uas", ("--username", "fax", "--password", "s3cret", "--expires", "120")),
    "t38_reinvite_488_uas": Case("t38_reinvite_488_uas", "uas", ("--reinvite-t38-after", "0.5")),
    # The outbound side (SIPp is the called line); against the call core: test_sipp_outbound.py.
    "outbound_t38_uas": Case("outbound_t38_uas", "uas", ("--call-t38", "--hangup-after", "1")),
    "outbound_busy_uas": Case("outbound_busy_uas", "uas"),
    "outbound_audio_then_peer_reinvite_uas": Case("outbound_audio_then_peer_reinvite_uas", "uas",
                                                  ("--hangup-after", "2")),
    # SIPp calls from 127.0.0.2, outside the UA's allow_from: challenged, then answered.
    # MD5 only: SIPp 3.6 reads just the first WWW-Authenticate and knows no SHA-256.
    "invite_digest_uac": Case("invite_digest_uac", "uac", _DIGEST_UA + ("--auth-user", "fax:s3cret"),
                              sipp_host="127.0.0.2", sipp_args=("-auth_uri", "service@{target}")),
    # The same with a password the UA does not know: 403 after the challenge, no call.
    "invite_digest_uac_wrong_password": Case("invite_digest_uac", "uac", _DIGEST_UA + ("--auth-user", "fax:other"),
                                             exit_when_done=False, sipp_host="127.0.0.2", sipp_passes=False,
                                             sipp_args=("-auth_uri", "service@{target}")),
}


@dataclass
class Result:
    case: Case
    sipp_rc: int | None
    sipp_output: str
    ua_rc: int | None
    ua_events: list[dict] = field(default_factory=list)
    ua_stderr: str = ""
    errors_log: str = ""

    def events(self, name: str) -> list[dict]:
        return [e for e in self.ua_events if e.get("event") == name]

    def describe(self) -> str:
        return (
            f"sipp rc={self.sipp_rc}\n--- sipp errors\n{self.errors_log[-3000:]}\n--- sipp stdout tail\n{self.sipp_output[-1500:]}"
            f"\n--- ua rc={self.ua_rc} events\n" + "\n".join(json.dumps(e) for e in self.ua_events) + f"\n--- ua stderr\n{self.ua_stderr[-3000:]}"
        )


def sipp_binary() -> str:
    path = shutil.which("sipp")
    if path is None:
        raise RuntimeError("sipp not found: install Debian's sip-tester (make test-deps)")
    return path


def free_udp_port() -> int:
    """A port free for both UDP and TCP on 127.0.0.1 right now."""
    for _ in range(50):
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as t:
            try:
                t.bind(("127.0.0.1", port))
            except OSError:
                continue
        return port
    raise RuntimeError("no free port")



def port_taken(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            return True
        return False


def _start_ua(args: list[str], workdir: Path, transport: str = "udp") -> tuple[subprocess.Popen, int]:
    env = dict(os.environ, PYTHONPATH=str(REPO) + os.pathsep + os.environ.get("PYTHONPATH", ""))
    out = open(workdir / "ua.out", "w")
    err = open(workdir / "ua.err", "w")
    proc = subprocess.Popen(
        [sys.executable, str(REPO / "tools" / "testua.py"), "--listen", f"{transport}:127.0.0.1:0", "--max-time", "40", *args],
        stdout=out, stderr=err, stdin=subprocess.DEVNULL, cwd=REPO, env=env,
    )
    deadline = time.monotonic() + 15
    while time.monotonic() < deadline:
        text = (workdir / "ua.out").read_text()
        if text.strip():
            first = json.loads(text.splitlines()[0])
            return proc, int(first[transport])
        if proc.poll() is not None:
            break
        time.sleep(0.05)
    proc.kill()
    raise RuntimeError(f"test UA did not start: {(workdir / 'ua.err').read_text()[-2000:]}")


def sipp_cmd(case: Case, port: int, target: str | None) -> list[str]:
    cmd = [
        sipp_binary(), "-sf", str(SCENARIOS / f"{case.scenario}.xml"), "-m", "1", "-l", "1",
        "-i", case.sipp_host, "-p", str(port), "-t", "t1" if case.transport == "tcp" else "u1",
        "-timeout", "30s", "-timeout_error", "-recv_timeout", "15000", "-max_recv_loops", "1000",
        "-trace_err", "-trace_msg", "-nostdin",
    ]
    cmd += [arg.replace("{target}", target or "") for arg in case.sipp_args]
    if target:
        cmd.append(target)
    return cmd


def run_case(case: Case) -> Result:
    """Run ``case`` and return what happened (never raises for a failing scenario)."""
    workdir = Path(tempfile.mkdtemp(prefix=f"sipp-{case.scenario}-"))
    sipp_port = free_udp_port()
    ua = sipp = None
    try:
        extra = ["--exit-when-done"] if case.exit_when_done else []
        if case.role == "uac":
            ua, ua_port = _start_ua([*case.ua_args, *extra], workdir, case.transport)
            sipp = subprocess.Popen(sipp_cmd(case, sipp_port, f"127.0.0.1:{ua_port}"), cwd=workdir,
                                    stdout=subprocess.PIPE, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
        else:
            sipp = subprocess.Popen(sipp_cmd(case, sipp_port, None), cwd=workdir,
                                    stdout=subprocess.PIPE, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
            deadline = time.monotonic() + 10
            while not port_taken(sipp_port) and time.monotonic() < deadline and sipp.poll() is None:
                time.sleep(0.05)
            action = ["--register", f"sip:127.0.0.1:{sipp_port}"] if "register" in case.scenario else ["--call", f"sip:fax@127.0.0.1:{sipp_port}"]
            ua, _ = _start_ua([*case.ua_args, *action, *extra], workdir)
        try:
            sipp_out, _ = sipp.communicate(timeout=45)
        except subprocess.TimeoutExpired:
            sipp.kill()
            sipp_out, _ = sipp.communicate()
        sipp_rc = sipp.returncode
        try:
            ua.wait(timeout=10 if case.exit_when_done else 0.5)
        except subprocess.TimeoutExpired:
            ua.terminate()
            try:
                ua.wait(timeout=5)
            except subprocess.TimeoutExpired:
                ua.kill()
                ua.wait()
        events = [json.loads(line) for line in (workdir / "ua.out").read_text().splitlines() if line.startswith("{")]
        errors = "".join(p.read_text(errors="replace") for p in workdir.glob("*_errors.log"))
        return Result(case, sipp_rc, sipp_out.decode(errors="replace"), ua.returncode, events,
                      (workdir / "ua.err").read_text(), errors)
    finally:
        for proc in (sipp, ua):
            if proc is not None and proc.poll() is None:
                proc.kill()
                proc.wait()
        shutil.rmtree(workdir, ignore_errors=True)


if __name__ == "__main__":
    names = sys.argv[1:] or list(CASES)
    failed = 0
    for name in names:
        result = run_case(CASES[name])
        ok = (result.sipp_rc == 0) == CASES[name].sipp_passes
        failed += not ok
        print(f"{name}: sipp rc={result.sipp_rc} ua rc={result.ua_rc}")
        if not ok:
            print(result.describe())
    sys.exit(1 if failed else 0)
