"""AudioFaxGateway (t38gw/audiofax.py) on the real libspandsp: options, lifetime, both edges.

Whole calls through it are in tests/interop/test_audio_fax.py.
"""

from __future__ import annotations

import ctypes

import pytest

import t38gw.audiofax as audiofax
from t38gw.audiofax import BLOCK_OCTETS, AudioFaxClosed, AudioFaxGateway, AudioFaxUnavailable
from udptl.codec import decode_ifp, encode_ifp
from udptl.ifp import IfpPacket, T30Indicator

SILENCE = {"ulaw": 0xFF, "alaw": 0xD5}


def ulaw_to_linear(octet: int) -> int:
    """ITU-T G.711 u-law expansion (independent of SpanDSP's)."""
    octet = ~octet & 0xFF
    magnitude = (((octet & 0x0F) << 3) + 0x84) << ((octet & 0x70) >> 4)
    return (0x84 - magnitude) if octet & 0x80 else (magnitude - 0x84)


def test_library_loads_with_no_reason() -> None:
    assert audiofax.load_spandsp() is not None
    assert audiofax.spandsp_unavailable_reason() is None


@pytest.mark.parametrize("law", ["ulaw", "alaw"])
def test_idle_gateway_sends_full_blocks_of_silence(law) -> None:
    with AudioFaxGateway(law=law) as gateway:
        for _ in range(5):
            block = gateway.send_audio()
            assert len(block) == BLOCK_OCTETS
        # G.711 silence: the code for +0 or -0 (u-law 0xFF/0x7F, A-law 0xD5/0x55).
        assert set(block) <= {SILENCE[law], SILENCE[law] ^ 0x80}


def test_ced_indicator_becomes_a_2100_hz_tone_on_the_line() -> None:
    """T.30 5.3.6.1 / T.38: our CED indicator must come out of the gateway as 2100 Hz."""
    with AudioFaxGateway(law="ulaw") as gateway:
        gateway.receive_ifp(encode_ifp(IfpPacket(T30Indicator.CED), 0), 0)
        samples = []
        for _ in range(25):  # 500 ms
            samples.extend(ulaw_to_linear(o) for o in gateway.send_audio())
    tail = samples[-4000:]  # the last 500 ms... of which the tone fills the end
    crossings = sum(1 for a, b in zip(tail, tail[1:]) if (a < 0) != (b < 0))
    seconds = len(tail) / 8000
    # 2100 Hz crosses zero 4200 times a second; allow the start-up and a little slack.
    assert 0.5 * 4200 * seconds <= crossings <= 1.05 * 4200 * seconds
    assert max(abs(s) for s in tail) > 1000


def test_audio_in_produces_ifps_taken_once_with_their_repeat_counts() -> None:
    with AudioFaxGateway(law="alaw") as gateway:
        for _ in range(10):
            gateway.receive_audio(bytes([SILENCE["alaw"]]) * BLOCK_OCTETS)
            gateway.receive_missing()
        taken = gateway.take_ifps_with_counts()
        assert taken, "the gateway announces no-signal at start"
        assert all(ifp.times >= 1 for ifp in taken)
        assert decode_ifp(taken[0].raw, 0).msg is T30Indicator.NO_SIGNAL
        assert gateway.take_ifps() == []
        stats = gateway.stats()
        assert (stats.blocks_in, stats.blocks_missing, stats.bit_rate, stats.pages_transferred) == (10, 10, 0, 0)


def test_bad_options_and_sizes_are_refused() -> None:
    with pytest.raises(ValueError):
        AudioFaxGateway(law="g722")
    with pytest.raises(ValueError):
        AudioFaxGateway(law="ulaw", modems=frozenset({"V.34"}))
    with pytest.raises(ValueError):
        AudioFaxGateway(law="ulaw", t38_version=4)
    with AudioFaxGateway(law="ulaw") as gateway:
        with pytest.raises(ValueError):
            gateway.receive_audio(b"\xff" * 159)
        with pytest.raises(ValueError):
            gateway.receive_ifp(b"", 0)


def test_use_after_close_raises_and_close_is_idempotent() -> None:
    gateway = AudioFaxGateway(law="ulaw")
    gateway.close()
    gateway.close()
    assert gateway.closed
    for call in (gateway.send_audio, gateway.receive_missing, gateway.stats,
                 lambda: gateway.receive_audio(b"\xff" * BLOCK_OCTETS), lambda: gateway.receive_ifp(b"\x00", 0)):
        with pytest.raises(AudioFaxClosed):
            call()


def test_missing_library_gives_a_reason_and_refuses(monkeypatch) -> None:
    def no_library(name, *args, **kwargs):
        raise OSError(f"{name}: cannot open shared object file")

    monkeypatch.setattr(audiofax, "_library", None)
    monkeypatch.setattr(audiofax, "_unavailable_reason", None)
    monkeypatch.setattr(audiofax.ctypes, "CDLL", no_library)
    assert audiofax.load_spandsp() is None
    reason = audiofax.spandsp_unavailable_reason()
    assert reason is not None and "libspandsp" in reason
    with pytest.raises(AudioFaxUnavailable, match="libspandsp"):
        AudioFaxGateway(law="ulaw")
    monkeypatch.setattr(audiofax.ctypes, "CDLL", ctypes.CDLL)
