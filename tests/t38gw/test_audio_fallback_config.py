"""``[t38] audio_fallback`` needs SpanDSP's modems at run time: with the library present the
call cores get the fallback; without it the gateway says so once, loudly, and serves T.38
as before (audio-only calls are then not received as audio)."""

from __future__ import annotations

import random

import structlog

import t38gw.audiofax
from t38gw.config import ArchiveConfig, Config, HttpConfig, T38Config
from t38gw.gateway import Gateway


def make_gateway(tmp_path, **t38) -> Gateway:
    config = Config(archive=ArchiveConfig(dir=str(tmp_path / "archive"), audit_log=str(tmp_path / "audit.jsonl")),
                    spool=str(tmp_path / "spool.db"), http=HttpConfig(listen=("127.0.0.1", 9)), t38=T38Config(**t38))
    return Gateway(config, rng=random.Random(1))


def test_with_spandsp_present_calls_fall_back_to_audio(tmp_path):
    assert t38gw.audiofax.load_spandsp() is not None  # make test installs libspandsp2
    gateway = make_gateway(tmp_path)
    try:
        assert gateway.call_settings.audio_fallback is True
    finally:
        gateway.spool.close()


def test_turned_off_in_the_config(tmp_path):
    gateway = make_gateway(tmp_path, audio_fallback=False)
    try:
        assert gateway.call_settings.audio_fallback is False
    finally:
        gateway.spool.close()


def test_without_spandsp_the_gateway_says_so_and_serves_t38(tmp_path, monkeypatch):
    monkeypatch.setattr(t38gw.audiofax, "load_spandsp", lambda: None)
    monkeypatch.setattr(t38gw.audiofax, "spandsp_unavailable_reason",
                        lambda: "libspandsp.so.2: cannot open shared object file")
    with structlog.testing.capture_logs() as logs:
        gateway = make_gateway(tmp_path)
    try:
        assert gateway.call_settings.audio_fallback is False
        [line] = [entry for entry in logs if entry["event"] == "audio_fallback_unavailable"]
        assert line["log_level"] == "error" and "cannot open shared object" in line["reason"]
        assert "apt-get install libspandsp2" in line["fix"]
    finally:
        gateway.spool.close()
