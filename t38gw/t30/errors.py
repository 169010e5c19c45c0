"""The two kinds of error the T.30 engine raises (STYLE.md 6).

Expected wire faults (a bad FCS, a lost IFP, a bad row) are not errors: the engine
records them as ``ProtocolEventLogged`` events and counters.  These exceptions are for
the two cases where a caller must know at once.
"""

from __future__ import annotations


class LocalProtocolError(Exception):
    """Our own code misused the engine (e.g. fed input after the call ended)."""


class RemoteProtocolError(Exception):
    """The peer sent something we cannot interpret (a frame or FIF T.30 cannot read).

    Inside the engine these are caught and answered as T.30 answers a command it could
    not read (see the receiver: DIS again in phase B, else silence); parsers raise them.
    """
