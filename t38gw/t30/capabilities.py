"""What a DCS may ask of a DIS: the capability check both T.30 engines make.

The called terminal offers its capabilities in DIS (``ReceiveCapabilities.dis_fif``)
and must refuse a DCS that asks for more (T.30 5.3.6.2.2: DCS is a subset of DIS); a
calling terminal picks its DCS from the same comparison.  The FIF codecs live in
``dcs``; this module only compares.
"""

from __future__ import annotations

from t38gw.t30.dcs import Compression, DcsParameters, Modulation, ReceiveCapabilities


def dcs_refusal(dcs: DcsParameters, capabilities: ReceiveCapabilities) -> str | None:
    """Why ``dcs`` asks for something ``capabilities`` did not offer, or None if it fits."""
    if dcs.unsupported_bits:
        return f"DCS asks for unsupported modes (T.30 Table 2 bits {list(dcs.unsupported_bits)})"
    if dcs.modulation.family not in capabilities.modems:
        return f"DCS asks for {dcs.modulation.family}, not offered"
    if dcs.compression not in capabilities.compressions or (dcs.ecm and not capabilities.ecm):
        return f"DCS asks for {dcs.compression.value} ecm={dcs.ecm}, not offered"
    if dcs.resolution not in capabilities.resolutions or dcs.paper_width not in capabilities.widths:
        return f"DCS asks for {dcs.resolution.label} width {dcs.width_px}, not offered"
    return None


#: The calling terminal's modem order, fastest first: where it starts and how it steps
#: down after FTT (T.30 Annex A.2 / 5.3.6.2.3 leave the order to the sender; this is the
#: order SpanDSP's t30.c uses).
FALLBACK_ORDER: tuple[Modulation, ...] = (
    Modulation.V17_14400, Modulation.V17_12000, Modulation.V17_9600, Modulation.V29_9600,
    Modulation.V17_7200, Modulation.V29_7200, Modulation.V27TER_4800, Modulation.V27TER_2400,
)


def usable_modems(offered: frozenset[str], ours: frozenset[str], max_bit_rate: int) -> list[Modulation]:
    """The modems both ends have, in ``FALLBACK_ORDER``, at or below ``max_bit_rate``."""
    return [m for m in FALLBACK_ORDER if m.family in offered and m.family in ours and m.bit_rate <= max_bit_rate]


def best_compression(offered: frozenset[Compression], ours: frozenset[Compression], ecm: bool) -> Compression:
    """MMR (ECM only, T.30 Table 2 note 9) over MR over MH, as both ends allow."""
    for compression in (Compression.MMR, Compression.MR):
        if compression in offered and compression in ours and (ecm or compression is not Compression.MMR):
            return compression
    return Compression.MH
