"""TSB-85 scripts: SpanDSP's ``tsb85.xml`` read into plain steps.

The file and the ETSI test pages it sends live in ``../shared/testdata/tsb85/`` (or
``$T38GW_TESTDATA/tsb85``); they are third-party data and never copied here.  See the
README there for their provenance and shape.
"""

from __future__ import annotations

import functools
import xml.etree.ElementTree as ET
from dataclasses import dataclass, field
from pathlib import Path

from tests.conftest import testdata_dir

#: Group name prefix -> annex letter.
ANNEXES = "ABCDEFGHIJ"


def tsb85_dir() -> Path:
    return testdata_dir() / "tsb85"


@dataclass(frozen=True)
class Step:
    """One ``<step>``: its attributes (lower-case names) and the names/descs of its checks."""

    index: int
    type: str
    dir: str | None
    attrs: dict = field(hash=False)
    checks: tuple[tuple[str, str], ...] = ()

    def get(self, name: str, default=None):
        return self.attrs.get(name, default)

    def describe(self) -> str:
        shown = " ".join(f"{k}={v!r}" for k, v in self.attrs.items() if k not in ("type", "dir"))
        return f"step {self.index} {self.dir or '-'} {self.type} {shown}".rstrip()


@dataclass(frozen=True)
class Repeat:
    """A ``<repeat min= max=>`` block: its steps happen between ``min`` and ``max`` times
    (fax_tester.c; ``min="0"`` blocks hold what a DUT *may* do, e.g. RNR/RR flow control)."""

    index: int
    min: int
    max: int
    steps: tuple[Step, ...]
    type: str = "REPEAT"
    dir: str | None = None


@dataclass(frozen=True)
class Script:
    name: str
    annex: str
    group: str
    steps: tuple  # Step | Repeat

    def flat(self) -> list[Step]:
        out = []
        for s in self.steps:
            out.extend(s.steps if isinstance(s, Repeat) else [s])
        return out


@functools.lru_cache(maxsize=1)
def load_scripts() -> dict[str, Script]:
    """Every test of tsb85.xml by name, in file order."""
    root = ET.parse(tsb85_dir() / "tsb85.xml").getroot()
    scripts: dict[str, Script] = {}
    for group in root.iter("test-group"):
        title = group.get("name", "")
        annex = title.split(" - ")[0].replace("Annex", "").strip()
        for test in group.iter("test"):
            counter = iter(range(10_000))
            steps = []
            for node in test:
                if node.tag == "step":
                    steps.append(_step(node, next(counter)))
                elif node.tag == "repeat":
                    inner = tuple(_step(n, next(counter)) for n in node if n.tag == "step")
                    steps.append(Repeat(inner[0].index, int(node.get("min", "0")),
                                        int(node.get("max", "1000000")), inner))
            scripts[test.get("name")] = Script(test.get("name"), annex, title, tuple(steps))
    return scripts


def _step(node, index: int) -> Step:
    attrs = {k.lower(): v for k, v in node.attrib.items()}
    checks = tuple((c.get("name", ""), c.get("desc", "")) for c in node.findall("check"))
    return Step(index, attrs.get("type", "").upper(), (attrs.get("dir") or None), attrs, checks)


def parse_octets(text: str) -> tuple[bytes, bool]:
    """A step's ``value`` of hex octets: (octets, open_ended).  ``...`` ends the listed
    octets and allows anything after them (SpanDSP's string_to_msg)."""
    octets = bytearray()
    for token in text.split():
        if token == "...":
            return bytes(octets), True
        octets.append(int(token, 16))
    return bytes(octets), False
