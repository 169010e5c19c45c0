"""Parse rate of a realistic trunk INVITE carrying a T.38 SDP.

Each iteration: parse_message (framing, start line, headers, validation of Via/From/To/
CSeq/Call-ID/Max-Forwards), read the top Via branch, From tag, To, CSeq, Call-ID, parse
the SDP and read the T.38 parameters. Reference measured in the same run: the bare
cost of splitting the same bytes into lines and header name/value pairs (the floor any
pure-Python parser pays). Run: .venv/bin/python bench/sip.py
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from sip.parser import parse_message  # noqa: E402
from sip.sdp import T38Params, find_t38_stream, parse_sdp  # noqa: E402

SDP = (
    b"v=0\r\n"
    b"o=BroadWorks 1893774 1 IN IP4 203.0.113.17\r\n"
    b"s=-\r\n"
    b"c=IN IP4 203.0.113.17\r\n"
    b"t=0 0\r\n"
    b"m=image 17032 udptl t38\r\n"
    b"a=T38FaxVersion:0\r\n"
    b"a=T38MaxBitRate:14400\r\n"
    b"a=T38FaxRateManagement:transferredTCF\r\n"
    b"a=T38FaxMaxBuffer:262\r\n"
    b"a=T38FaxMaxDatagram:176\r\n"
    b"a=T38FaxUdpEC:t38UDPRedundancy\r\n"
    b"a=sendrecv\r\n"
)

INVITE = (
    b"INVITE sip:+15550100@198.51.100.20:5060;transport=udp SIP/2.0\r\n"
    b"Via: SIP/2.0/UDP 203.0.113.10:5060;branch=z9hG4bK-524287-1---a1b2c3d4e5f60718;rport\r\n"
    b"Max-Forwards: 69\r\n"
    b"Record-Route: <sip:203.0.113.10;lr;ftag=as5c7e3f1a>\r\n"
    b'From: "CARDIOLOGY FAX" <sip:+15557654321@203.0.113.10;user=phone>;tag=as5c7e3f1a\r\n'
    b"To: <sip:+15550100@198.51.100.20;user=phone>\r\n"
    b"Contact: <sip:+15557654321@203.0.113.10:5060;transport=udp>\r\n"
    b"Call-ID: 5f2a9c1e6b3d4a7f8e0c1b2a3d4e5f60@203.0.113.10\r\n"
    b"CSeq: 102 INVITE\r\n"
    b"User-Agent: BroadWorks\r\n"
    b"Allow: INVITE, ACK, CANCEL, OPTIONS, BYE, REFER, NOTIFY, INFO, UPDATE, PRACK\r\n"
    b"Supported: replaces, timer, 100rel\r\n"
    b"Session-Expires: 1800;refresher=uac\r\n"
    b"Min-SE: 90\r\n"
    b"P-Asserted-Identity: <sip:+15557654321@203.0.113.10;user=phone>\r\n"
    b"Content-Type: application/sdp\r\n"
    b"Content-Length: " + str(len(SDP)).encode() + b"\r\n"
    b"\r\n" + SDP
)


def parse_once(data: bytes) -> T38Params:
    message = parse_message(data)
    assert message.vias[0].branch
    assert message.from_.tag
    assert message.to.uri
    assert message.cseq[0] == 102
    assert message.call_id
    sdp = parse_sdp(message.body)
    stream = find_t38_stream(sdp)
    assert stream is not None and sdp.address_of(stream)
    return T38Params.from_attributes(stream.attributes)


def sdp_only(data: bytes) -> T38Params:
    """The SDP share of parse_once: parse the body, find the T.38 stream, read its parameters."""
    sdp = parse_sdp(SDP)
    stream = find_t38_stream(sdp)
    assert stream is not None and sdp.address_of(stream)
    return T38Params.from_attributes(stream.attributes)


def split_only(data: bytes) -> int:
    head, _, body = data.partition(b"\r\n\r\n")
    lines = head.decode("utf-8", "surrogateescape").split("\r\n")
    pairs = [line.partition(":") for line in lines[1:]]
    return len(pairs) + len(body.split(b"\r\n"))


def best_rates(functions: dict, data: bytes, rounds: int = 400, burst_seconds: float = 0.001) -> dict[str, float]:
    """Calls per second of each function: short bursts interleaved round-robin, best kept.

    Interleaving puts every function under the same machine load, and bursts of about a
    millisecond fit between the scheduler's preemptions, so the best burst is close to
    what a quiet core gives even when other processes share the machine.
    """
    bursts = {}
    for name, fn in functions.items():
        start = time.perf_counter()
        for _ in range(200):
            fn(data)
        per_call = (time.perf_counter() - start) / 200
        bursts[name] = max(5, int(burst_seconds / per_call))
    best = {name: 0.0 for name in functions}
    for _ in range(rounds):
        for name, fn in functions.items():
            count = bursts[name]
            start = time.perf_counter()
            for _ in range(count):
                fn(data)
            elapsed = time.perf_counter() - start
            best[name] = max(best[name], count / elapsed)
    return best


def main() -> None:
    params = parse_once(INVITE)
    assert params.max_datagram == 176
    print(f"INVITE of {len(INVITE)} bytes ({len(SDP)}-byte T.38 SDP), Python {sys.version.split()[0]}")
    rates = best_rates({"full": parse_once, "message": parse_message, "sdp": sdp_only, "reference": split_only}, INVITE)
    full = rates["full"]
    print(f"parse + Via/From/To/CSeq/Call-ID + SDP + T38Params: {full:10,.0f} messages/s ({1e6 / full:.1f} us each)")
    print(f"parse_message alone (incl. header validation):   {rates['message']:10,.0f} messages/s")
    print(f"SDP alone (parse_sdp + find_t38_stream + T38Params): {rates['sdp']:7,.0f} bodies/s")
    print(f"reference: bare split into lines and name/value:  {rates['reference']:10,.0f} messages/s "
          f"(full parse costs {rates['reference'] / full:.1f}x the bare split)")
    # Issue #5's yardstick: the fastest Python SIP parser measured earlier did 39.6k INVITE+SDP
    # messages/s -- parsing the message, not the SDP inside it.  Both readings are printed.
    verdict = lambda rate: "met" if rate >= 40_000 else "NOT met"  # noqa: E731
    print(f"goal >= 40,000/s on one core: message parse {verdict(rates['message'])}; "
          f"message + headers + SDP + T.38 parameters {verdict(full)}")


if __name__ == "__main__":
    main()
