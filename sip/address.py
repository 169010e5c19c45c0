"""Where a message comes from or goes to, and a message on its way out. Sans-IO."""

from __future__ import annotations

from collections.abc import Hashable
from dataclasses import dataclass
from typing import TYPE_CHECKING

from sip.message import Request, Response

if TYPE_CHECKING:  # a type-only cycle: a transaction holds its destination Address
    from sip.transaction import Transaction


@dataclass(frozen=True)
class Address:
    """Where a message came from or goes to. ``connection`` names a TCP/TLS stream."""

    transport: str
    host: str
    port: int
    connection: Hashable | None = None

    @property
    def reliable(self) -> bool:
        return self.transport != "udp"


@dataclass(frozen=True)
class Outgoing:
    """A message to send.  ``transaction`` is given back in ``UserAgent.send_failed``."""

    destination: Address
    message: Request | Response
    data: bytes
    transaction: Transaction | None = None
