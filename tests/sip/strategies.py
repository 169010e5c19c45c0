"""Hypothesis strategies for SIP values, messages and SDP."""

from __future__ import annotations

import string

from hypothesis import strategies as st

from sip.message import Headers, NameAddr, Request, Response, Via, canonical_name, quote_string
from sip.uri import AbsoluteUri, SipUri

TOKEN_ALPHABET = string.ascii_letters + string.digits + "-.!%*_+`'~"
LOWER_TOKEN_ALPHABET = string.ascii_lowercase + string.digits + "-.!%*_+`'~"

tokens = st.text(TOKEN_ALPHABET, min_size=1, max_size=12)
lower_tokens = st.text(LOWER_TOKEN_ALPHABET, min_size=1, max_size=12)
# Any text a header can carry: no CR/LF, no surrogates.
free_text = st.text(st.characters(blacklist_categories=("Cs",), blacklist_characters="\r\n"), max_size=16)

labels = st.text(string.ascii_lowercase + string.digits, min_size=1, max_size=8)
hostnames = st.lists(labels, min_size=1, max_size=4).map(".".join)
ipv4 = st.tuples(*[st.integers(0, 255)] * 4).map(lambda t: ".".join(map(str, t)))
ipv6 = st.lists(st.integers(0, 0xFFFF), min_size=8, max_size=8).map(lambda g: "[" + ":".join(f"{x:x}" for x in g) + "]")
hosts = st.one_of(hostnames, ipv4, ipv6)
ports = st.none() | st.integers(0, 65535)

uri_params = st.dictionaries(lower_tokens, st.none() | free_text, max_size=3)

sip_uris = st.builds(
    SipUri,
    scheme=st.sampled_from(["sip", "sips"]),
    user=st.none() | free_text.filter(bool),
    password=st.none(),
    host=hosts,
    port=ports,
    params=uri_params,
    headers=st.dictionaries(free_text.filter(bool), free_text, max_size=2),
).flatmap(
    lambda uri: st.builds(
        lambda pw: SipUri(uri.scheme, uri.user, pw if uri.user is not None else None, uri.host, uri.port, uri.params, uri.headers),
        st.none() | free_text,
    )
)

absolute_uris = st.builds(
    AbsoluteUri,
    scheme=st.sampled_from(["tel", "urn", "http", "mailto"]),
    opaque=st.text(string.ascii_letters + string.digits + "+-;=@/:.", min_size=1, max_size=20),
)

# Header parameter values: tokens or quoted strings (RFC 3261 25.1 gen-value).
header_param_values = st.none() | tokens | free_text.map(quote_string)
header_params = st.dictionaries(lower_tokens, header_param_values, max_size=3)

name_addrs = st.builds(
    NameAddr,
    display=st.none() | free_text.filter(lambda s: s != ""),
    uri=sip_uris | absolute_uris,
    params=header_params,
)

vias = st.builds(
    Via,
    transport=st.sampled_from(["UDP", "TCP", "TLS", "SCTP", "WS"]),
    host=hosts,
    port=ports,
    params=st.dictionaries(lower_tokens, st.none() | tokens, max_size=3),
)

_RESERVED = {"via", "from", "to", "call-id", "cseq", "max-forwards", "content-length", "content-type"}
extra_headers = st.lists(
    st.tuples(
        tokens.filter(lambda n: canonical_name(n).lower() not in _RESERVED),
        free_text.map(str.strip),
    ),
    max_size=5,
)


@st.composite
def requests(draw) -> Request:
    method = draw(tokens)
    headers = Headers()
    for via in draw(st.lists(vias, min_size=1, max_size=3)):
        headers.add("Via", str(via))
    headers.add("From", str(draw(name_addrs)))
    headers.add("To", str(draw(name_addrs)))
    headers.add("Call-ID", draw(tokens) + "@" + draw(hostnames))
    headers.add("CSeq", f"{draw(st.integers(0, 2**31 - 1))} {method}")
    headers.add("Max-Forwards", str(draw(st.integers(0, 255))))
    for name, value in draw(extra_headers):
        headers.add(name, value)
    return Request(method, draw(sip_uris.filter(lambda u: not u.headers) | absolute_uris), headers, draw(st.binary(max_size=64)))


@st.composite
def responses(draw) -> Response:
    headers = Headers()
    for via in draw(st.lists(vias, min_size=1, max_size=3)):
        headers.add("Via", str(via))
    headers.add("From", str(draw(name_addrs)))
    headers.add("To", str(draw(name_addrs)))
    headers.add("Call-ID", draw(tokens))
    headers.add("CSeq", f"{draw(st.integers(0, 2**31 - 1))} {draw(tokens)}")
    for name, value in draw(extra_headers):
        headers.add(name, value)
    reason = draw(free_text).strip()
    return Response(draw(st.integers(100, 699)), reason, headers, draw(st.binary(max_size=64)))
