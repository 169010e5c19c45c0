"""TimerTable against a plain dict model: the earliest deadline and the due order agree."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from sip.timers import TimerTable

ops = st.lists(
    st.one_of(
        st.tuples(st.just("set"), st.integers(0, 6), st.integers(0, 50)),
        st.tuples(st.just("pop"), st.integers(0, 6), st.just(0)),
        st.tuples(st.just("due"), st.just(0), st.integers(0, 50)),
    ),
    max_size=200,
)


@settings(deadline=None, max_examples=200)
@given(ops)
def test_timer_table_matches_a_dict(operations):
    table, model = TimerTable(), {}
    for op, key, value in operations:
        if op == "set":
            table[key] = float(value)
            model[key] = float(value)
        elif op == "pop":
            assert table.pop(key) == model.pop(key, None)
        else:
            fired = []
            while (k := table.pop_due(float(value))) is not None:
                fired.append(k)
            expected = sorted((d, k) for k, d in model.items() if d <= value)
            assert [model[k] for k in fired] == [d for d, _ in expected]
            for k in fired:
                del model[k]
        assert table.next_deadline() == (min(model.values()) if model else None)
        assert len(table) == len(model)
    assert len(table._heap) <= 2 * len(model) + 64 + 1  # stale entries are compacted


def test_superseded_deadline_never_fires():
    table = TimerTable()
    table["refresh"] = 10.0
    table["refresh"] = 20.0  # re-armed later
    assert table.pop_due(15.0) is None
    assert table.pop_due(20.0) == "refresh" and table.pop_due(1e9) is None
