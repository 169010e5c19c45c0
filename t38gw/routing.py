"""Routing rules: first match wins (DESIGN.md ``[[routes]]``).

``did``, ``caller`` and ``trunk`` are known when the INVITE arrives, so a rule with
``reject = true`` is answered 603 before any media.  ``tsi`` is known only after T.30
phase B, so it can steer delivery (webhook, archive sub-folder) but not acceptance:
``route_at_invite`` skips rules that need the TSI, and ``route_after_phase_b`` runs
the whole list again once the TSI is known.  The call core (``t38gw.call``) asks
both, through ``CallSettings``, with the facts it keeps for the call.
"""

from __future__ import annotations

import re

from t38gw.call import CallFacts
from t38gw.config import Route
from t38gw.sanitize import original

DEFAULT_ROUTE = Route()


def facts_of_call(sip_meta: dict, tsi: str | None = None) -> CallFacts:
    """The routing facts of a call from its record's ``sip`` part (meta.json ``sip``).

    The trunk is the one the INVITE came in on, kept in the record: routing again after
    phase B must see the same trunk, or every ``trunk =`` rule would fall through to a
    later one (another folder, another webhook and its secret).
    """
    return CallFacts(did=original(sip_meta, "did"), caller=original(sip_meta, "caller"),
                     trunk=sip_meta.get("trunk", ""), tsi=tsi)


def _matches(pattern: str, value: str | None) -> bool:
    if not pattern:
        return True
    if value is None:
        return False
    return re.search(pattern, value) is not None


def _route_matches(route: Route, facts: CallFacts) -> bool:
    return (_matches(route.did, facts.did) and _matches(route.caller, facts.caller)
            and (not route.trunk or route.trunk == facts.trunk) and _matches(route.tsi, facts.tsi))


def route_at_invite(routes: tuple[Route, ...], facts: CallFacts) -> tuple[int | None, Route]:
    """The first rule that matches what the INVITE tells; rules on ``tsi`` are skipped.

    Returns (index of the rule or None for the default route, the rule).
    """
    for index, route in enumerate(routes):
        if route.tsi:
            continue
        if _route_matches(route, facts):
            return index, route
    return None, DEFAULT_ROUTE


def route_after_phase_b(routes: tuple[Route, ...], facts: CallFacts) -> tuple[int | None, Route]:
    """The first matching rule now that the TSI is known (a rejecting rule cannot apply any more)."""
    for index, route in enumerate(routes):
        if route.reject and route.tsi:
            continue
        if _route_matches(route, facts):
            return index, route
    return None, DEFAULT_ROUTE
