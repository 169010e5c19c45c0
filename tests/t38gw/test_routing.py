from t38gw.config import Route
from t38gw.routing import CallFacts, facts_of_call, route_after_phase_b, route_at_invite

ROUTES = (
    Route(did=r"^\+?15550100$", reject=True),
    Route(tsi=r"^\+1 212", archive_subdir="nyc"),
    Route(did=r"^\+?1555010[0-9]$", archive_subdir="cardiology", webhook="ehr"),
    Route(trunk="carrier-b", archive_subdir="b"),
)


def test_first_match_wins_and_reject():
    assert route_at_invite(ROUTES, CallFacts("+15550100", "x", "carrier"))[1].reject
    index, route = route_at_invite(ROUTES, CallFacts("15550105", "x", "carrier"))
    assert index == 2 and route.archive_subdir == "cardiology"


def test_default_route_when_nothing_matches():
    index, route = route_at_invite(ROUTES, CallFacts("999", "x", "carrier"))
    assert index is None and not route.reject and route.archive_subdir == ""


def test_trunk_line_routing():
    assert route_at_invite(ROUTES, CallFacts("999", "x", "carrier-b"))[1].archive_subdir == "b"


def test_tsi_steers_delivery_after_phase_b_only():
    facts = CallFacts("15550105", "x", "carrier", tsi="+1 212 555 1234")
    assert route_at_invite(ROUTES, facts)[1].archive_subdir == "cardiology"
    assert route_after_phase_b(ROUTES, facts)[1].archive_subdir == "nyc"


# A trunk-routed call must stay on its route once the TSI is known (the hardening review:
# re-routing ran with trunk="" and fell through to a later rule: wrong folder, wrong webhook).
TRUNK_ROUTES = (
    Route(trunk="carrier-a", archive_subdir="a", webhook="a-hook"),
    Route(tsi=r"^\+1 212", archive_subdir="nyc"),
    Route(archive_subdir="catch-all"),
)


def test_trunk_routed_call_keeps_its_route_after_phase_b():
    sip_meta = {"did": "5550100", "caller": "5550199", "trunk": "carrier-a"}
    index, route = route_at_invite(TRUNK_ROUTES, facts_of_call(sip_meta))
    assert (index, route.archive_subdir) == (0, "a")
    index, route = route_after_phase_b(TRUNK_ROUTES, facts_of_call(sip_meta, tsi="+1 555 0199"))
    assert (index, route.archive_subdir) == (0, "a")
    # Another trunk's call with a matching TSI is steered by it.
    other = {"did": "5550100", "caller": "5550199", "trunk": "udp"}
    assert route_after_phase_b(TRUNK_ROUTES, facts_of_call(other, tsi="+1 212 555 1234"))[1].archive_subdir == "nyc"


def test_facts_of_call_reads_what_the_invite_said():
    facts = facts_of_call({"did": "1", "caller": "2", "trunk": "tcp"}, tsi="3")
    assert facts == CallFacts(did="1", caller="2", trunk="tcp", tsi="3")


def test_a_route_naming_no_trunk_or_listener_is_a_config_error(tmp_path):
    import pytest

    from t38gw.config import ConfigError, load_config

    path = tmp_path / "c.toml"
    path.write_text('[[routes]]\ntrunk = "carier"\n')
    with pytest.raises(ConfigError) as error:
        load_config(path, environ={})
    assert error.value.key == "routes[0].trunk"
    path.write_text('[[sip.trunks]]\nname = "carrier"\nregistrar = "sip:x"\n[[routes]]\ntrunk = "carrier"\n'
                    '[[routes]]\ntrunk = "tcp"\n')
    assert [r.trunk for r in load_config(path, environ={}).routes] == ["carrier", "tcp"]
