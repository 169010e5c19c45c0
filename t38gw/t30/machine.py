"""The table-driving core both T.30 engines share (receiver and transmitter).

Each engine declares ``TRANSITIONS: {State: {input: (handler, next_state or set of
states)}}``; a handler returns an outcome (or None: nothing to do) and never sets the
state.  This class looks the input up in the current state's row, runs the handler and
checks the state it chose against the table; the engine's ``_apply`` carries the
outcome out (its frames, events, ending), the only place the state changes.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

from t38gw.t30.errors import LocalProtocolError
from t38gw.t30.events import Event, ProtocolEventLogged


class TableMachine:
    """Base of ``T30Receiver`` and ``T30Transmitter``: see the module docstring.

    Subclasses set ``_ENDED`` (their state enum's ENDED) and ``_TRANSITIONS``, keep ``state``, ``_row``
    (``TRANSITIONS[state]``) and ``_events``, and define ``_apply(outcome, declared)``.
    """

    _ENDED: Any
    _TRANSITIONS: Mapping[Any, Mapping[Any, tuple[Callable[[Any, Any], Any], Any]]]
    state: Any
    _row: Mapping[Any, tuple[Callable[[Any, Any], Any], Any]]
    _events: list[Event]

    def _input(self, what: object, arrived: object = None) -> bool:
        """Run ``what``'s transition from the current state; False if its row lacks it."""
        entry = self._row.get(what)
        if entry is None:
            return False
        handler, declared = entry
        outcome = handler(self, arrived)
        if outcome is not None or declared is not self.state:  # else: stay, nothing to do
            self._apply(outcome, declared)
        return True

    def _apply(self, outcome: Any, declared: Any) -> None:
        raise NotImplementedError

    def _move_without_outcome(self, declared: Any) -> None:
        """A handler that decided nothing: take the table's only next state, or stay where
        the table lets the handler choose (it must then be one of the choices)."""
        if not isinstance(declared, frozenset):
            self.state = declared
            self._row = self._TRANSITIONS[declared]
        elif self.state not in declared:
            raise LocalProtocolError(f"{self.state.value}: a handler must choose among {declared}")

    def _chosen_state(self, outcome: Any, declared: Any) -> Any:
        """The state ``outcome`` leads to, checked against the table's ``declared`` choice(s)."""
        chosen = outcome.next_state
        if chosen is None:
            chosen = declared if not isinstance(declared, frozenset) else self.state
        if chosen is not declared and (not isinstance(declared, frozenset) or chosen not in declared):
            raise LocalProtocolError(f"{self.state.value} -> {chosen.value} is not in the transition table")
        if (outcome.end is None) is (chosen is self._ENDED):
            raise LocalProtocolError(f"{self.state.value} -> {chosen.value}: ENDED needs an Ending and only it")
        return chosen

    def _take_events(self) -> list[Event]:
        events, self._events = self._events, []
        return events

    def _log(self, what: str) -> None:
        self._events.append(ProtocolEventLogged(self.state.value, what))
