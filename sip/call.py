"""The ``Call`` handle the UA gives the TU, its states, and the names the UA keys its
transactions and timers by. Sans-IO; nothing here acts, ``sip.ua`` does.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass

from sip.address import Address
from sip.auth import DigestClient
from sip.dialog import Dialog
from sip.message import Request, Response
from sip.transaction import Transaction


class CallState(enum.Enum):
    OFFERED = "offered"  # inbound INVITE, not answered yet
    CALLING = "calling"  # outbound INVITE, no final response yet
    ANSWERED = "answered"  # inbound: 2xx sent, waiting for the ACK
    CONFIRMED = "confirmed"
    ENDED = "ended"


class Direction(enum.StrEnum):
    """Who sent the dialog-creating INVITE (a ``str``: compares equal to its value)."""

    INBOUND = "inbound"
    OUTBOUND = "outbound"


class Role(enum.Enum):
    """What a transaction the UA started or answered is for (the UA's owner table)."""

    INVITE_IN = "invite-in"  # the peer's dialog-creating INVITE
    REINVITE_IN = "reinvite-in"  # the peer's re-INVITE
    INVITE_OUT = "invite-out"  # our dialog-creating INVITE
    REINVITE_OUT = "reinvite-out"  # our re-INVITE (media change or session refresh)
    UPDATE_OUT = "update-out"  # our UPDATE session refresh (RFC 4028 7.4)
    BYE_OUT = "bye-out"


class UATimer(enum.Enum):
    """The UA's own timers (transactions keep theirs). Keyed ``(UATimer, owner)``: the
    owner is a call id, a trunk name, or "" for ``FLUSH_REFUSALS``."""

    OFFER = "offer"  # an inbound INVITE the TU leaves unanswered gets 480
    RETRANSMIT_2XX = "2xx"  # RFC 3261 13.3.1.4: resend our 2xx until the ACK
    GIVE_UP_2XX = "2xx-giveup"  # 13.3.1.4: no ACK in 64*T1
    GLARE = "glare"  # RFC 3261 14.1: retry our re-INVITE after a 491
    SESSION_REFRESH = "refresh"  # RFC 4028 10: we refresh at half the interval
    SESSION_EXPIRE = "expire"  # RFC 4028 10: the peer did not refresh: BYE
    REGISTER_REFRESH = "register"  # RFC 3261 10.2.1: re-REGISTER before expiry / retry
    FLUSH_REFUSALS = "refusals"  # report the RequestRefused events the throttle held


TimerKey = tuple[UATimer, str]


@dataclass(eq=False)
class Call:
    """One call (one INVITE dialog).  The TU holds it as an opaque handle; ``id`` is unique.

    ``invite_tx`` is the INVITE's transaction: the server transaction of an inbound call
    from the start, the client transaction of an outbound one once sent.
    """

    id: str
    direction: Direction
    state: CallState
    call_id: str
    invite: Request
    invite_tx: Transaction | None
    peer: Address
    local_tag: str
    dialog: Dialog | None = None
    local_sdp: bytes | None = None
    remote_sdp: bytes | None = None
    # a peer's re-INVITE waiting for the TU: (request, server transaction)
    pending_reinvite: tuple[Request, Transaction] | None = None
    # our re-INVITE in flight: (client transaction, offered sdp)
    out_reinvite: tuple[Transaction, bytes] | None = None
    glare_retry_sdp: bytes | None = None
    # UAS 2xx retransmission (RFC 3261 13.3.1.4): (server tx, response, interval)
    unacked: tuple[Transaction, Response, float] | None = None
    bye_after_ack: bool = False
    ack: Request | None = None  # UAC: the ACK we sent for the 2xx, resent on 2xx retransmissions
    session_interval: int | None = None
    we_refresh: bool = False
    peer_allows_update: bool = False
    provisional_seen: bool = False
    cancel_requested: bool = False
    cancel_sent: bool = False
    credentials: tuple[str, str] | None = None
    auth_tries: int = 0
    digest: DigestClient | None = None  # answers the peer's challenges to our requests
    end_reason: str | None = None

    def __repr__(self) -> str:
        return f"<Call {self.id} {self.direction} {self.state.value}>"

    @property
    def in_dialog(self) -> Dialog:
        """The dialog, for an operation that only happens inside one."""
        if self.dialog is None:
            raise AssertionError(f"{self!r} has no dialog yet")
        return self.dialog

    @property
    def invite_transaction(self) -> Transaction:
        """The INVITE transaction, for an operation that only happens once it exists."""
        if self.invite_tx is None:
            raise AssertionError(f"{self!r} has no INVITE transaction yet")
        return self.invite_tx
