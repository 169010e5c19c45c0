"""What a DCS may ask of a DIS: the capability check both T.30 engines make.

The called terminal offers its capabilities in DIS (``ReceiveCapabilities.dis_fif``)
and must refuse a DCS that asks for more (T.30 5.3.6.2.2: DCS is a subset of DIS); a
calling terminal picks its DCS from the same comparison.  The FIF codecs live in
``dcs``; this module only compares.
"""

from __future__ import annotations

from t38gw.t30.dcs import DcsParameters, ReceiveCapabilities


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
