from t38gw.config import Route
from t38gw.routing import CallFacts, route_after_phase_b, route_at_invite

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
