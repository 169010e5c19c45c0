"""The SpanDSP peer binding works: it drives the real libspandsp and reports what it did.

These tests prove the binding, not SpanDSP: an encode/decode round trip through the
library's own T.38 core, whole SpanDSP-to-SpanDSP faxes, and SpanDSP's T.4 coder checked
against libtiff.
"""

from __future__ import annotations

import ctypes
import gzip
import hashlib
import io
import json
import re
import shutil
import subprocess
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tests.peers.spandsp import (
    RECEIVER_TO_SENDER,
    SENDER_TO_RECEIVER,
    T4_COMPRESSIONS,
    T30_ERR_OK,
    T30_ERRORS,
    T30_STATS_FIELDS,
    T38_DATA_TYPES,
    T38_FIELD_TYPES,
    T38_INDICATORS,
    T38_TERMINAL_OPTIONS,
    SpandspT38Core,
    SpandspT38Terminal,
    coded_page_tiff,
    load_spandsp,
    make_fax_tiff,
    read_fax_tiff,
    read_pbm,
    run_spandsp_fax,
    spandsp_t4_encode,
)
from tools.gen_spandsp_vectors import generate as generate_vectors

SPANDSP_INCLUDE = Path("/usr/include/spandsp")
VECTORS = Path(__file__).resolve().parent.parent / "vectors" / "spandsp_ifp"

VERSIONS = [0, 1, 2, 3]
# Field types that T.38 version 0 can carry (its field-type enumeration had no extension).
V0_FIELD_TYPES = [v for n, v in T38_FIELD_TYPES.items() if v <= T38_FIELD_TYPES["T4_NON_ECM_SIG_END"]]


def test_load_spandsp_finds_the_library():
    lib = load_spandsp()
    assert isinstance(lib, ctypes.CDLL)
    assert lib is load_spandsp()


def test_missing_library_raises_peer_missing_with_the_install_hint(monkeypatch):
    import tests.peers.spandsp as peer

    def no_library(name, *args, **kwargs):
        raise OSError(f"{name}: cannot open shared object file")

    monkeypatch.setattr(peer, "_library", None)
    monkeypatch.setattr(peer.ctypes, "CDLL", no_library)
    with pytest.raises(peer.PeerMissing, match="apt-get install libspandsp2"):
        peer.load_spandsp()


@pytest.mark.parametrize("version", VERSIONS)
def test_every_indicator_round_trips_through_spandsp(version):
    with SpandspT38Core(version) as encoder, SpandspT38Core(version) as decoder:
        for seq, indicator in enumerate(T38_INDICATORS.values()):
            if version == 0 and indicator >= T38_INDICATORS["V8_ANSAM"]:
                # T.38 (1998) had no V.8/V.34/V.33 indicators: SpanDSP refuses them.
                with pytest.raises(ValueError):
                    encoder.encode_indicator(indicator)
                continue
            ifp = encoder.encode_indicator(indicator)
            assert decoder.decode(ifp, seq) == [("indicator", indicator)]


def test_repeated_indicator_is_still_encoded():
    with SpandspT38Core() as core:
        first = core.encode_indicator(T38_INDICATORS["CED"])
        assert core.encode_indicator(T38_INDICATORS["CED"]) == first


def _fields(version: int):
    field_types = V0_FIELD_TYPES if version == 0 else list(T38_FIELD_TYPES.values())
    return st.lists(
        st.tuples(st.sampled_from(field_types), st.binary(min_size=1, max_size=40)), min_size=1, max_size=5
    )


@settings(deadline=None, max_examples=60)
@given(data=st.data(), version=st.sampled_from(VERSIONS))
def test_data_fields_round_trip_through_spandsp(data, version):
    data_types = [v for v in T38_DATA_TYPES.values() if version > 0 or v <= T38_DATA_TYPES["V17_14400"]]
    data_type = data.draw(st.sampled_from(data_types))
    fields = data.draw(_fields(version))
    with SpandspT38Core(version) as encoder, SpandspT38Core(version) as decoder:
        if len(fields) == 1:
            ifp = encoder.encode_data(data_type, *fields[0])
        else:
            ifp = encoder.encode_data_multi(data_type, fields)
        expected = [("data", data_type, field_type, payload) for field_type, payload in fields]
        assert decoder.decode(ifp, 0) == expected


@pytest.mark.parametrize("version", [1, 2, 3])
def test_fields_without_data_round_trip_from_version_1(version):
    fields = [(T38_FIELD_TYPES["HDLC_DATA"], b"\xff\x13"), (T38_FIELD_TYPES["HDLC_FCS_OK"], b""),
              (T38_FIELD_TYPES["HDLC_SIG_END"], b"")]
    with SpandspT38Core(version) as encoder, SpandspT38Core(version) as decoder:
        ifp = encoder.encode_data_multi(T38_DATA_TYPES["V21"], fields)
        assert decoder.decode(ifp, 0) == [("data", T38_DATA_TYPES["V21"], t, d) for t, d in fields]


# T.38 (1998) Annex A, Data-Field: field-type has no extension marker (the "typo" the
# 2002 corrigendum fixed), so in aligned PER a field without field-data is 4 bits.
T38_1998_DATA_FIELD_ASN1 = """
T38V0 DEFINITIONS AUTOMATIC TAGS ::= BEGIN
Data-Field ::= SEQUENCE OF SEQUENCE {
    field-type ENUMERATED {hdlc-data, hdlc-sig-end, hdlc-fcs-OK, hdlc-fcs-BAD, hdlc-fcs-OK-sig-end,
                           hdlc-fcs-BAD-sig-end, t4-non-ecm-data, t4-non-ecm-sig-end},
    field-data OCTET STRING (SIZE(1..65535)) OPTIONAL }
END
"""


def test_version_0_fieldless_multi_field_quirk_is_reported():
    """SpanDSP 0.0.6 encodes a version-0 field without data as a whole octet, but decodes
    it as a nibble, as aligned PER of the 1998 ASN.1 packs it (checked with asn1tools).
    Its own multi-field packet with two data-less fields therefore does not decode, while
    the PER encoding does. The binding must report the rejection, not hide it."""
    import asn1tools

    fields = [(T38_FIELD_TYPES["HDLC_FCS_OK"], b""), (T38_FIELD_TYPES["HDLC_SIG_END"], b"")]
    per = asn1tools.compile_string(T38_1998_DATA_FIELD_ASN1, "per").encode(
        "Data-Field", [{"field-type": "hdlc-fcs-OK"}, {"field-type": "hdlc-sig-end"}]
    )
    with SpandspT38Core(0) as encoder, SpandspT38Core(0) as decoder:
        ifp = encoder.encode_data_multi(T38_DATA_TYPES["V21"], fields)
        assert ifp[2:] != per[1:] and len(ifp[2:]) == 2 and len(per[1:]) == 1
        assert decoder.decode(ifp, 0)[-1] == ("rejected",)
        # The same packet with the Data-Field as PER has it: type octet, then the PER bytes.
        per_ifp = ifp[:1] + per
        assert decoder.decode(per_ifp, 1) == [("data", T38_DATA_TYPES["V21"], t, d) for t, d in fields]


def test_decode_reports_missing_repeat_and_trailing_garbage():
    with SpandspT38Core(3) as encoder, SpandspT38Core(3) as decoder:
        ifp = encoder.encode_indicator(T38_INDICATORS["V21_PREAMBLE"])
        assert decoder.decode(ifp, 10) == [("indicator", T38_INDICATORS["V21_PREAMBLE"])]
        assert decoder.decode(ifp, 10) == []  # a repeat is dropped silently
        assert decoder.decode(ifp, 13) == [("missing", 11, 13), ("indicator", T38_INDICATORS["V21_PREAMBLE"])]
        assert decoder.decode(ifp + b"\x00", 14)[-1] == ("rejected",)
        assert decoder.decode(b"", 15) == [("rejected",)]


def test_oversized_data_is_refused_before_reaching_spandsp():
    with SpandspT38Core() as core:
        with pytest.raises(ValueError):
            core.encode_data(T38_DATA_TYPES["V21"], T38_FIELD_TYPES["HDLC_DATA"], bytes(2000))


def test_closed_core_refuses_use():
    core = SpandspT38Core()
    core.close()
    core.close()
    with pytest.raises(ValueError):
        core.encode_indicator(T38_INDICATORS["CNG"])


# ---------------------------------------------------------------------------------------
# Constants agree with the installed headers (libspandsp-dev, installed by make test)


def _header(name: str) -> str:
    path = SPANDSP_INCLUDE / name
    if not path.is_file():
        pytest.fail(f"{path} missing: apt-get install libspandsp-dev (make test does this)")
    return path.read_text()


def _enum_names(source: str, first: str) -> list[str]:
    """Names of the C enum that starts with ``first``, in declaration order (no explicit values after the first)."""
    body = re.search(r"enum\s*\w*\s*\{([^}]*\b" + first + r"\b[^}]*)\}", source).group(1)
    body = re.sub(r"/\*.*?\*/", "", body, flags=re.S)
    return [item.split("=")[0].strip() for item in body.split(",") if item.strip()]


def test_t30_error_codes_match_the_header():
    names = _enum_names(_header("t30.h"), "T30_ERR_OK")
    assert T30_ERRORS == {name: value for value, name in enumerate(names)}


def test_t30_stats_layout_matches_the_header():
    struct = re.search(r"typedef struct\s*\{([^}]*)\}\s*t30_stats_t;", _header("t30.h")).group(1)
    struct = re.sub(r"#if 0.*?#endif", "", struct, flags=re.S)
    assert tuple(re.findall(r"\bint\s+(\w+);", struct)) == T30_STATS_FIELDS


def test_t38_enums_match_the_header():
    source = _header("t38_core.h")
    assert list(T38_INDICATORS) == [n.removeprefix("T38_IND_") for n in _enum_names(source, "T38_IND_NO_SIGNAL")]
    assert list(T38_DATA_TYPES) == [n.removeprefix("T38_DATA_") for n in _enum_names(source, "T38_DATA_V21")
                                    if n != "T38_DATA_NONE"]
    assert list(T38_FIELD_TYPES) == [n.removeprefix("T38_FIELD_")
                                     for n in _enum_names(source, "T38_FIELD_HDLC_DATA")]


# ---------------------------------------------------------------------------------------
# Fax TIFFs


def _chart(testdata: Path, number: int) -> tuple[bytes, int, int]:
    return read_pbm(gzip.decompress((testdata / "itu_t24_charts" / f"itu{number}.pbm.gz").read_bytes()))


@pytest.fixture(scope="module")
def three_charts(testdata) -> list[tuple[bytes, int, int]]:
    return [_chart(testdata, number) for number in (1, 2, 3)]


def _tiffinfo(path: Path) -> str:
    tool = shutil.which("tiffinfo")
    if tool is None:
        pytest.fail("tiffinfo missing: apt-get install libtiff-tools (make test does this)")
    return subprocess.run([tool, str(path)], capture_output=True, text=True, check=True, timeout=30).stdout


@pytest.mark.parametrize("compression", ["group4", "group3", "raw"])
def test_fax_tiff_round_trips_pages_and_resolution(tmp_path, three_charts, compression):
    small = (bytes([0b10100000, 0xF0]) * 3, 12, 3)  # padding bits are 0
    pages = [three_charts[0], small]
    path = tmp_path / "fax.tif"
    make_fax_tiff(path, pages, x_dpi=204, y_dpi=98, compression=compression)
    assert read_fax_tiff(path) == [(bitmap, width, height, 204.0, 98.0) for bitmap, width, height in pages]
    info = _tiffinfo(path)
    assert info.count("min-is-white") == 2
    assert "Rows/Strip: 2376" in info and info.count("Rows/Strip:") == 2


def test_pbm_reader_rejects_truncated_and_foreign_data(testdata):
    raw = gzip.decompress((testdata / "itu_t24_charts" / "itu1.pbm.gz").read_bytes())
    bitmap, width, height = read_pbm(raw)
    assert (width, height, len(bitmap)) == (1728, 2376, 216 * 2376)
    with pytest.raises(ValueError):
        read_pbm(raw[:-1])
    with pytest.raises(ValueError):
        read_pbm(b"P5" + raw[2:])


# ---------------------------------------------------------------------------------------
# SpanDSP T.38 terminal against SpanDSP T.38 terminal

FAX_CASES = [(True, "mh"), (True, "mr"), (True, "mmr"), (False, "mh"), (False, "mr")]


@pytest.mark.parametrize("version", [0, 3])
@pytest.mark.parametrize(("ecm", "coding"), FAX_CASES)
def test_three_page_chart_fax_arrives_pixel_exact(tmp_path, three_charts, version, ecm, coding):
    tx_tiff, rx_tiff = tmp_path / "tx.tif", tmp_path / "rx.tif"
    make_fax_tiff(tx_tiff, three_charts, x_dpi=204, y_dpi=196)
    run = run_spandsp_fax(tx_tiff, rx_tiff, ecm=ecm, version=version, compressions={coding}, max_sim_seconds=300)
    assert (run.sender_status, run.receiver_status) == (T30_ERR_OK, T30_ERR_OK)
    assert run.ok
    assert run.sender_stats["pages_tx"] == 3 and run.receiver_stats["pages_rx"] == 3
    assert run.receiver_stats["encoding"] == T4_COMPRESSIONS[coding]
    assert run.receiver_stats["error_correcting_mode"] == int(ecm)
    # Pixels per metre: 204 x 196 dpi is T.30's R8 x fine.
    assert (run.receiver_stats["x_resolution"], run.receiver_stats["y_resolution"]) == (8031, 7700)
    received = read_fax_tiff(rx_tiff)
    assert [(bitmap, width, height) for bitmap, width, height, _, _ in received] == three_charts
    assert {(x, y) for *_, x, y in received} == {(204.0, 196.0)}
    # Both directions spoke, with per-direction consecutive sequence numbers.
    for direction in (SENDER_TO_RECEIVER, RECEIVER_TO_SENDER):
        seqs = [packet.seq for packet in run.trace if packet.direction == direction]
        assert seqs == list(range(len(seqs))) and seqs
    assert ("phase_e", T30_ERR_OK) in run.receiver_events


@pytest.mark.parametrize(("max_bitrate", "expected", "ecm"), [(9600, 9600, True), (12000, 9600, False),
                                                            (4800, 4800, False)])
def test_bitrate_cap_and_standard_resolution(tmp_path, three_charts, max_bitrate, expected, ecm):
    bitmap, width, _ = three_charts[1]
    page = (bitmap[: 216 * 500], width, 500)
    tx_tiff, rx_tiff = tmp_path / "tx.tif", tmp_path / "rx.tif"
    make_fax_tiff(tx_tiff, [page], x_dpi=204, y_dpi=98)
    run = run_spandsp_fax(tx_tiff, rx_tiff, ecm=ecm, max_bitrate=max_bitrate)
    assert run.ok
    assert run.receiver_stats["bit_rate"] == expected
    assert run.receiver_stats["y_resolution"] == 3850  # pixels per metre: 98 lines per inch
    assert read_fax_tiff(rx_tiff) == [(page[0], width, 500, 204.0, 98.0)]


@pytest.mark.parametrize("version", [0, 3])
def test_every_traced_ifp_decodes_in_spandsps_own_core(tmp_path, three_charts, version):
    tx_tiff = tmp_path / "tx.tif"
    make_fax_tiff(tx_tiff, three_charts[:1])
    run = run_spandsp_fax(tx_tiff, tmp_path / "rx.tif", ecm=True, version=version)
    assert run.ok
    for direction in (SENDER_TO_RECEIVER, RECEIVER_TO_SENDER):
        with SpandspT38Core(version) as core:
            for packet in (p for p in run.trace if p.direction == direction):
                decoded = core.decode(packet.ifp, packet.seq)
                assert decoded and ("rejected",) not in decoded, packet


def test_dead_link_fails_with_a_timeout_status(tmp_path, three_charts):
    tx_tiff = tmp_path / "tx.tif"
    make_fax_tiff(tx_tiff, three_charts[:1])
    run = run_spandsp_fax(tx_tiff, tmp_path / "rx.tif", channel=lambda ifp, seq, now: [], max_sim_seconds=120)
    assert run.sender_status not in (None, T30_ERR_OK)
    assert run.receiver_status not in (None, T30_ERR_OK)
    assert run.sim_seconds < 120
    assert not run.ok


def test_lossy_link_still_delivers_with_ecm(tmp_path, three_charts):
    """Lose every 7th image packet towards the receiver: ECM must repair the page."""
    tx_tiff, rx_tiff = tmp_path / "tx.tif", tmp_path / "rx.tif"
    make_fax_tiff(tx_tiff, three_charts[:1])
    dropped = []

    def to_receiver(ifp, seq, now):
        if seq % 7 == 3 and len(ifp) > 40:
            dropped.append(seq)
            return []
        return [(now + 0.01, ifp, seq)]

    run = run_spandsp_fax(tx_tiff, rx_tiff, ecm=True, channel=(to_receiver, lambda ifp, seq, now: [(now + 0.01, ifp, seq)]))
    assert dropped
    assert run.ok
    assert read_fax_tiff(rx_tiff)[0][0] == three_charts[0][0]


def test_terminal_reports_callback_errors_and_frees(tmp_path):
    def broken(ifp, count):
        raise RuntimeError("boom")

    terminal = SpandspT38Terminal(calling_party=False, on_ifp=broken, rx_tiff=tmp_path / "rx.tif")
    with pytest.raises(RuntimeError, match="boom"):
        for _ in range(200):
            terminal.advance(160)
    terminal.close()
    terminal.close()
    with pytest.raises(ValueError):
        terminal.advance(160)


def _image_bytes_sent(run, version: int) -> int:
    total = 0
    with SpandspT38Core(version) as core:
        for packet in (p for p in run.trace if p.direction == SENDER_TO_RECEIVER):
            for item in core.decode(packet.ifp, packet.seq):
                if item[0] == "data" and item[2] == T38_FIELD_TYPES["T4_NON_ECM_DATA"]:
                    total += len(item[3])
    return total


def test_receiver_minimum_scan_line_time_pads_non_ecm_rows(tmp_path, three_charts):
    tx_tiff = tmp_path / "tx.tif"
    make_fax_tiff(tx_tiff, three_charts[:1])
    runs = {}
    for scan_ms in (0, 40):
        runs[scan_ms] = run_spandsp_fax(tx_tiff, tmp_path / f"rx{scan_ms}.tif", ecm=False, compressions={"mh"},
                                        receiver_options={"min_scan_line_time_ms": scan_ms})
        assert runs[scan_ms].ok
        assert read_fax_tiff(tmp_path / f"rx{scan_ms}.tif")[0][0] == three_charts[0][0]
    # 40 ms per row at 14400 bit/s is at least 72 bytes for each of the 2376 rows.
    assert _image_bytes_sent(runs[40], 0) >= 72 * 2376 > _image_bytes_sent(runs[0], 0)


def test_sequence_numbers_wrap_without_harm(tmp_path, three_charts):
    tx_tiff = tmp_path / "tx.tif"
    make_fax_tiff(tx_tiff, three_charts[:1])
    run = run_spandsp_fax(tx_tiff, tmp_path / "rx.tif", first_seq=65500)
    assert run.ok
    seqs = [p.seq for p in run.trace if p.direction == SENDER_TO_RECEIVER]
    assert 65535 in seqs and 0 in seqs


def test_unpaced_mode_sends_each_packet_once(tmp_path, three_charts):
    tx_tiff = tmp_path / "tx.tif"
    make_fax_tiff(tx_tiff, three_charts[:1])
    options = {"config": T38_TERMINAL_OPTIONS["NO_PACING"]}
    run = run_spandsp_fax(tx_tiff, tmp_path / "rx.tif", sender_options=options, receiver_options=options)
    assert run.ok
    assert {p.count for p in run.trace} == {1}
    paced = run_spandsp_fax(tx_tiff, tmp_path / "rx2.tif")
    assert max(p.count for p in paced.trace) > 1


def test_spandsp_log_lines_reach_a_python_sink(tmp_path, three_charts):
    tx_tiff = tmp_path / "tx.tif"
    make_fax_tiff(tx_tiff, three_charts[:1])
    lines = []
    run = run_spandsp_fax(tx_tiff, tmp_path / "rx.tif", log=lambda level, text: lines.append(text))
    assert run.ok
    assert any("DIS" in line for line in lines) and any("caller-t30" in line for line in lines)


def test_terminal_counts_rejected_ifps(tmp_path):
    with SpandspT38Terminal(calling_party=False, on_ifp=lambda ifp, count: None, version=3,
                            rx_tiff=tmp_path / "rx.tif") as terminal:
        with SpandspT38Core(3) as core:
            good = core.encode_indicator(T38_INDICATORS["CNG"])
        terminal.rx_ifp(good, 0)
        assert terminal.rx_rejected == 0
        terminal.rx_ifp(good + b"\xff", 1)
        terminal.rx_ifp(b"\xff\xff\xff", 2)
        assert terminal.rx_rejected == 2


def test_terminal_rejects_impossible_options():
    with pytest.raises(ValueError):
        SpandspT38Terminal(calling_party=True, on_ifp=lambda ifp, count: None, compressions={"jbig"})
    with pytest.raises(ValueError):
        SpandspT38Terminal(calling_party=True, on_ifp=lambda ifp, count: None, max_bitrate=2400)


# ---------------------------------------------------------------------------------------
# SpanDSP's T.4/T.6 coder, checked by libtiff


def _libtiff_decode(coded: bytes, width: int, height: int, coding: str, y_dpi: float) -> bytes:
    from PIL import Image

    with Image.open(io.BytesIO(coded_page_tiff(coded, width, height, coding, y_dpi=y_dpi))) as image:
        image.load()
        assert image.size == (width, height)
        return image.tobytes("raw", "1;I")


@pytest.mark.parametrize("chart", [1, 4, 8])
@pytest.mark.parametrize("coding", ["mh", "mr", "mmr"])
def test_t4_encode_of_itu_chart_decodes_in_libtiff_to_the_source(testdata, chart, coding):
    bitmap, width, height = _chart(testdata, chart)
    coded = spandsp_t4_encode(bitmap, width, height, coding)
    assert 0 < len(coded) < len(bitmap)
    assert _libtiff_decode(coded, width, height, coding, 196) == bitmap


def _first_bits_lsb_first(data: bytes, count: int) -> str:
    return "".join(str((data[i // 8] >> (i % 8)) & 1) for i in range(count))


@pytest.mark.parametrize("coding", ["mh", "mr"])
def test_t4_encode_starts_with_eol_read_lsb_first(testdata, coding):
    # T.4 4.1.2: a page starts with EOL (000000000001); MR follows it with the 1-D tag bit 1.
    bitmap, width, height = _chart(testdata, 2)
    coded = spandsp_t4_encode(bitmap, width, height, coding)
    expected = "000000000001" + ("1" if coding == "mr" else "")
    assert _first_bits_lsb_first(coded, len(expected)) == expected


REVERSE_BITS = bytes(int(f"{value:08b}"[::-1], 2) for value in range(256))


def test_t4_encode_bytes_travel_bit_reversed_in_t38_non_ecm_data(testdata):
    """The vector page (top 400 rows of chart 1, MH) is in the T.38 non-ECM data that
    SpanDSP sent, each byte bit-reversed: T.38 puts the first bit on the line in the MSB."""
    bitmap, width, _ = _chart(testdata, 1)
    coded = spandsp_t4_encode(bitmap[: 216 * 400], width, 400, "mh")
    sent = b"".join(
        bytes.fromhex(item[3])
        for record in map(json.loads, (VECTORS / "v0_nonecm_mh.jsonl").read_text().splitlines())
        if record["dir"] == SENDER_TO_RECEIVER
        for item in record["decoded"]
        if item[0] == "data" and item[2] == T38_FIELD_TYPES["T4_NON_ECM_DATA"]
    )
    body = coded[:-1]  # the last byte is padded with 1 bits, the line carries more after it
    assert body.translate(REVERSE_BITS) in sent
    assert body not in sent


def test_t4_mr_k_factor_follows_vertical_resolution(testdata):
    # T.4 4.2.1: K = 2 at standard (98 lpi), 4 at fine (196 lpi): more 1-D rows at standard.
    bitmap, width, height = _chart(testdata, 1)
    standard = spandsp_t4_encode(bitmap, width, height, "mr", y_dpi=98)
    fine = spandsp_t4_encode(bitmap, width, height, "mr", y_dpi=196)
    assert standard != fine
    assert _libtiff_decode(standard, width, height, "mr", 98) == bitmap
    assert len(standard) > len(fine)


def test_t4_encode_rejects_bad_input():
    with pytest.raises(ValueError):
        spandsp_t4_encode(b"\x00" * 10, 16, 5, "jbig")
    with pytest.raises(ValueError):
        spandsp_t4_encode(b"\x00" * 9, 16, 5, "mh")


# ---------------------------------------------------------------------------------------
# The generated IFP vectors


def _vector_files() -> list[Path]:
    files = sorted(VECTORS.glob("*.jsonl"))
    assert files, f"no vectors in {VECTORS}"
    return files


def test_vectors_match_readme_checksums():
    readme = (VECTORS / "README.md").read_text()
    for path in _vector_files():
        digest = hashlib.sha256(path.read_bytes()).hexdigest()
        assert f"`{path.name}` |" in readme and digest in readme, path.name


def test_vectors_decode_in_spandsp_as_recorded():
    for path in _vector_files():
        version = int(path.name[1])
        records = [json.loads(line) for line in path.read_text().splitlines()]
        assert any(r["dir"] == SENDER_TO_RECEIVER for r in records)
        assert any(r["dir"] == RECEIVER_TO_SENDER for r in records)
        decoders = {direction: SpandspT38Core(version) for direction in (SENDER_TO_RECEIVER, RECEIVER_TO_SENDER)}
        try:
            for record in records:
                decoded = decoders[record["dir"]].decode(bytes.fromhex(record["ifp"]), record["seq"])
                as_json = [[d[0], d[1], d[2], d[3].hex()] if d[0] == "data" else list(d) for d in decoded]
                assert as_json == record["decoded"], (path.name, record)
        finally:
            for decoder in decoders.values():
                decoder.close()


def test_vectors_regenerate_byte_exact(tmp_path):
    sums = generate_vectors(tmp_path)
    assert sums == {path.name: hashlib.sha256(path.read_bytes()).hexdigest() for path in _vector_files()}
