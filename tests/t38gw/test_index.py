"""The archive index (t38gw/index.py) against a reference written here in plain Python.

A few hundred meta.json files of both directions, of this version and of older ones
(no ``media``, no ``sip.trunk``), are written into real archive folders; the index is
built from the folders, and every search is compared with the same filter applied to the
meta dicts themselves, ordered newest first by (started_at, id).
"""

from __future__ import annotations

import base64
import datetime as dt
import itertools
import math
import os
import random
import re
import shutil
import stat
import threading
from pathlib import Path
from typing import Any

import pytest

from imaging import Page
from t38gw import archive
from t38gw.config import Config, Route
from t38gw.faxrecord import InboundFax
from t38gw.ids import new_fax_id
from t38gw.index import ArchiveIndex, IndexQueryError, fts_query, number_key
from t38gw.outbound import DialTarget
from t38gw.sendjob import SendOptions, initial_meta

DAY = 86400.0
EPOCH = 1_780_000_000.0  # 2026-05-28
CALLERS = ["+1 555 0555", "5550555", "+15550199", "+1 (555) 0100", "0044 20 7946 0555", "anonymous", "Anonymous", ""]
DIDS = ["+15550100", "5550100", "+15550101", "100", ""]
IDENTS = ["ACME Clinic", "St Mary Cardiology", "+1 555 0100", "", "acme labs", "Ärztehaus Süd", "LAB-7 \"night\""]
ROUTES = ["default", "routes[0]", "routes[1]", ""]
REASONS = ["", "t30_rx_dcn", "busy", "no_answer", "interrupted"]
INBOUND_STATUSES = ["received", "partial", "failed"]
OUTBOUND_STATUSES = ["queued", "dialing", "sending", "sent", "partial", "failed"]
LIST_KEYS = {"id", "direction", "status", "reason", "started_at", "ended_at", "pages", "caller", "did",
             "remote_ident", "route", "media", "to"}


# -- the synthetic archive --------------------------------------------------------------------

def make_meta(rng: random.Random, started_at: float, fax_id: str | None = None) -> dict[str, Any]:
    direction = rng.choice(["inbound", "outbound"])
    old = rng.random() < 0.25  # written by an earlier version: no media, no sip.trunk, no in_progress
    fax_id = fax_id or new_fax_id(started_at, rng)
    status = rng.choice(INBOUND_STATUSES if direction == "inbound" else OUTBOUND_STATUSES)
    sip: dict[str, Any] = {"call_id": f"c{rng.getrandbits(32)}", "from": "", "to": "", "remote_addr": "",
                           "caller": rng.choice(CALLERS), "did": rng.choice(DIDS)}
    meta: dict[str, Any] = {
        "id": fax_id, "direction": direction, "status": status, "reason": rng.choice(REASONS),
        "started_at": archive.rfc3339(started_at),
        "ended_at": archive.rfc3339(started_at + rng.uniform(10, 600)) if rng.random() < 0.9 else None,
        "sip": sip,
        "t30": {"remote_ident": rng.choice(IDENTS), "local_ident": "+1 555 0100 Gateway", "pages": 0},
        "pages": [{"number": n} for n in range(1, rng.randint(0, 4) + 1)],
        "files": {}, "route": rng.choice(ROUTES),
    }
    if not old:
        meta["in_progress"] = status in ("queued", "dialing", "sending")
        meta["media"] = rng.choice(["t38", "g711u", "g711a"])
        sip["trunk"] = rng.choice(["carrier", "pbx", ""])
        if rng.random() < 0.1:
            meta["hold"] = {"by": "api", "at": meta["started_at"]}
    if direction == "outbound":
        meta["to"] = rng.choice(["+1 555 0199", "+15550101", "sip:fax@192.0.2.7"])
    return meta


def write_fax(root: Path, meta: dict[str, Any], rng: random.Random) -> Path:
    started_at = dt.datetime.fromisoformat(meta["started_at"]).timestamp()
    folder = archive.fax_folder(root, meta["id"], started_at, rng.choice(["", "", "cardiology"]))
    archive.write_meta(folder, meta)
    return folder


@pytest.fixture(scope="module")
def corpus(tmp_path_factory) -> tuple[Path, list[dict[str, Any]]]:
    """300 faxes over 60 days; a few share a start instant exactly (the id breaks the tie)."""
    rng = random.Random(1515)
    root = tmp_path_factory.mktemp("archive")
    metas = []
    starts = [round(EPOCH + rng.uniform(0, 60 * DAY), 3) for _ in range(280)]
    starts += [starts[0]] * 10 + [starts[1]] * 10
    for started_at in starts:
        meta = make_meta(rng, started_at)
        write_fax(root, meta, rng)
        metas.append(meta)
    return root, metas


@pytest.fixture(scope="module")
def built(corpus, tmp_path_factory) -> ArchiveIndex:
    root, metas = corpus
    index = ArchiveIndex(tmp_path_factory.mktemp("index") / "index.db")
    assert index.needs_rebuild
    seen: list[int] = []
    assert index.rebuild(root, progress=seen.append) == len(metas)
    assert seen and seen[-1] == len(metas)
    return index


# -- the reference ----------------------------------------------------------------------------

def started(meta: dict[str, Any]) -> float:
    return dt.datetime.fromisoformat(meta["started_at"]).timestamp()


def newest_first(metas: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return sorted(metas, key=lambda m: (started(m), m["id"]), reverse=True)


def digits(text: str) -> str:
    return re.sub(r"\D", "", text)


def number_matches(number: str, wanted: str) -> bool:
    if digits(wanted):
        return bool(digits(number)) and digits(number).endswith(digits(wanted))
    return not digits(number) and number.strip().casefold() == wanted.strip().casefold()


def words_of(meta: dict[str, Any]) -> set[str]:
    """What q can find: the words of the numbers, idents, route, reason, trunk (diacritics
    folded), and each number's digits whole and as its last 10 and 7 digits."""
    numbers = [meta["sip"].get("caller", ""), meta["sip"].get("did", ""), meta.get("to", "")]
    texts = numbers + [meta["t30"]["remote_ident"], meta["t30"]["local_ident"], meta["route"], meta["reason"],
                       meta["sip"].get("trunk", "")]
    words = {fold(w) for text in texts for w in re.findall(r"[^\W_]+", text)}
    for number in numbers:
        d = digits(number)
        words.update(d[-n:] for n in (len(d), 10, 7) if len(d) >= n > 0)
    return words


def fold(word: str) -> str:
    import unicodedata
    return "".join(c for c in unicodedata.normalize("NFD", word.casefold()) if not unicodedata.combining(c))


def reference(metas: list[dict[str, Any]], **filters: Any) -> list[str]:
    def keep(meta: dict[str, Any]) -> bool:
        if "since" in filters and started(meta) < filters["since"]:
            return False
        if "until" in filters and started(meta) >= filters["until"]:
            return False
        if "status" in filters and meta["status"] not in filters["status"].split(","):
            return False
        if "direction" in filters and meta["direction"] != filters["direction"]:
            return False
        if "caller" in filters and not number_matches(meta["sip"]["caller"], filters["caller"]):
            return False
        if "did" in filters and not number_matches(meta["sip"]["did"], filters["did"]):
            return False
        if "remote_ident" in filters and filters["remote_ident"].casefold() not in \
                meta["t30"]["remote_ident"].casefold():
            return False
        if "route" in filters and meta["route"] != filters["route"]:
            return False
        if "held" in filters and bool(meta.get("hold")) != filters["held"]:
            return False
        if "q" in filters and not {fold(w) for w in re.findall(r"[^\W_]+", filters["q"])} <= words_of(meta):
            return False
        return True

    return [meta["id"] for meta in newest_first(metas) if keep(meta)]


def page_through(index: ArchiveIndex, limit: int, **filters: Any) -> list[str]:
    ids: list[str] = []
    cursor = None
    for _ in range(1000):  # bounded: 300 faxes at limit >= 1
        rows, cursor = index.search(limit=limit, cursor=cursor, **filters)
        assert len(rows) <= limit
        ids.extend(row["id"] for row in rows)
        if cursor is None:
            return ids
        assert len(rows) == limit, "a page before the last one is full"
    raise AssertionError("the cursor never ended")


MID = EPOCH + 30 * DAY
SINGLE_FILTERS = [
    {"since": EPOCH + 20 * DAY}, {"until": EPOCH + 10 * DAY}, {"since": EPOCH + 10 * DAY, "until": EPOCH + 12 * DAY},
    {"status": "received"}, {"status": "partial,failed"}, {"status": "queued"},
    {"direction": "inbound"}, {"direction": "outbound"},
    {"caller": "0555"}, {"caller": "+1 555 0555"}, {"caller": "5550199"}, {"caller": "anonymous"},
    {"caller": "(555) 0100"}, {"did": "100"}, {"did": "0101"}, {"did": "+15550100"},
    {"remote_ident": "acme"}, {"remote_ident": "CARDIO"}, {"remote_ident": "ärzte"}, {"remote_ident": "\"night\""},
    {"remote_ident": "La"}, {"remote_ident": "+1 555"},
    {"route": "default"}, {"route": "routes[1]"}, {"route": ""}, {"held": True}, {"held": False},
    {"q": "acme"}, {"q": "Cardiology mary"}, {"q": "5550555"}, {"q": "busy"}, {"q": "carrier"}, {"q": "sud"},
    {"q": "routes 0"}, {"q": "night"}, {"q": "nobodyhasthisword"},
]


def as_search_args(filters: dict[str, Any]) -> dict[str, Any]:
    """The filters as the API hands them over: times as RFC 3339 text."""
    return {k: archive.rfc3339(v) if k in ("since", "until") else v for k, v in filters.items()}


# -- search against the reference ---------------------------------------------------------------

@pytest.mark.parametrize("filters", SINGLE_FILTERS, ids=lambda f: ",".join(f"{k}={v}" for k, v in f.items()))
def test_each_filter_alone_finds_what_the_reference_finds(built, corpus, filters):
    _, metas = corpus
    expected = reference(metas, **filters)
    assert page_through(built, 1000, **as_search_args(filters)) == expected
    assert page_through(built, 7, **as_search_args(filters)) == expected


def test_the_filters_are_not_all_trivially_empty_or_full(corpus):
    _, metas = corpus
    sizes = [len(reference(metas, **filters)) for filters in SINGLE_FILTERS[:-1]]
    assert all(0 < size < len(metas) for size in sizes), sizes


def test_filters_combined_find_what_the_reference_finds(built, corpus):
    _, metas = corpus
    rng = random.Random(7)
    nonempty = 0
    for _ in range(150):
        combined: dict[str, Any] = {}
        for filters in rng.sample(SINGLE_FILTERS, rng.randint(2, 4)):
            combined.update(filters)
        if combined.get("until", math.inf) < combined.get("since", -math.inf):
            with pytest.raises(IndexQueryError, match="until"):
                built.search(**as_search_args(combined))
            continue
        expected = reference(metas, **combined)
        nonempty += bool(expected)
        assert page_through(built, rng.choice([1, 3, 50]), **as_search_args(combined)) == expected, combined
    assert nonempty > 30  # the combinations are not all empty


def test_the_unfiltered_list_is_every_fax_newest_first_with_ties_broken_by_id(built, corpus):
    _, metas = corpus
    rows, cursor = built.search(limit=1000)
    assert cursor is None
    assert [row["id"] for row in rows] == [m["id"] for m in newest_first(metas)]
    assert built.count() == len(metas)
    assert len({row["started_at"] for row in rows}) <= len(rows) - 18  # 20 share two start instants


def test_rows_carry_the_list_keys_with_the_meta_values(built, corpus):
    _, metas = corpus
    by_id = {m["id"]: m for m in metas}
    rows, _ = built.search(limit=1000)
    for row in rows:
        meta = by_id[row["id"]]
        assert set(row) == LIST_KEYS
        assert row == {
            "id": meta["id"], "direction": meta["direction"], "status": meta["status"], "reason": meta["reason"],
            "started_at": meta["started_at"], "ended_at": meta["ended_at"], "pages": len(meta["pages"]),
            "caller": meta["sip"]["caller"], "did": meta["sip"]["did"], "remote_ident": meta["t30"]["remote_ident"],
            "route": meta["route"], "media": meta.get("media"), "to": meta.get("to", ""),
        }


def test_get_folder_names_the_folder_and_the_index_matches_each_meta(built, corpus):
    root, metas = corpus
    folders = {folder.name: folder for folder in archive.iter_faxes(root)}
    for meta in metas:
        assert built.get_folder(meta["id"]) == folders[meta["id"]].absolute()
        assert built.is_consistent_with(meta, folders[meta["id"]])
    assert built.get_folder("no-such-fax") is None


# -- paging --------------------------------------------------------------------------------------

def test_paging_while_faxes_arrive_never_repeats_or_skips(corpus, tmp_path):
    """Between page requests new faxes are indexed: one newer than the first page (never
    shown: it is before the cursor), one among the rows already shown (never shown), one
    older than the cursor (shown exactly once)."""
    root, metas = corpus
    index = ArchiveIndex(tmp_path / "index.db")
    index.rebuild(root)
    rng = random.Random(99)
    everything = list(metas)
    shown: list[str] = []
    rows, cursor = index.search(limit=20, direction="inbound")
    shown.extend(row["id"] for row in rows)
    expected_later: list[dict[str, Any]] = []
    newest = max(started(m) for m in metas)
    oldest = min(started(m) for m in metas)
    for step in range(200):
        if cursor is None:
            break
        last_at = dt.datetime.fromisoformat(rows[-1]["started_at"]).timestamp()
        for started_at, later in ((newest + 1 + step, False), (rng.uniform(last_at, newest), False),
                                  (rng.uniform(oldest - DAY, last_at - 0.001), True)):
            meta = make_meta(rng, round(started_at, 3))
            meta["direction"] = "inbound"
            index.upsert(meta, write_fax(tmp_path / "new", meta, rng))
            everything.append(meta)
            if later:
                expected_later.append(meta)
        rows, cursor = index.search(limit=20, direction="inbound", cursor=cursor)
        shown.extend(row["id"] for row in rows)
    assert cursor is None
    assert len(shown) == len(set(shown)), "a fax was shown twice"
    first_page_end = shown[19]
    original = reference(metas, direction="inbound")
    assert [i for i in shown if i in {m["id"] for m in metas}] == original  # no gap, same order
    later_ids = {m["id"] for m in expected_later}
    assert later_ids <= set(shown), "a fax older than the cursor was skipped"
    assert set(shown) - {m["id"] for m in metas} == later_ids, "a fax newer than the cursor appeared"
    # Every page is in the order of the whole list at the moment it was read: the list as shown
    # is the reference order of all faxes the reader was shown.
    final_order = reference(everything, direction="inbound")
    assert shown == [i for i in final_order if i in set(shown)]
    assert first_page_end == original[19]


def test_a_cursor_survives_the_row_it_points_at_being_deleted(built, corpus, tmp_path):
    root, metas = corpus
    index = ArchiveIndex(tmp_path / "index.db")
    index.rebuild(root)
    rows, cursor = index.search(limit=10)
    assert index.delete(rows[-1]["id"])
    assert not index.delete(rows[-1]["id"])
    rest = page_through_from(index, cursor)
    assert rows[:-1] and [row["id"] for row in rows] + rest == [m["id"] for m in newest_first(metas)]


def page_through_from(index: ArchiveIndex, cursor: str | None) -> list[str]:
    ids: list[str] = []
    for _ in range(100):
        if cursor is None:
            return ids
        rows, cursor = index.search(limit=50, cursor=cursor)
        ids.extend(row["id"] for row in rows)
    raise AssertionError("the cursor never ended")


# -- full text ---------------------------------------------------------------------------------

@pytest.mark.parametrize("q", ['555"', "AND", "OR NOT", "NEAR(acme", "acme AND", "^acme", "acme:", "-acme",
                               "a\x00b", "(((x", "\"\"\"x", "*acme", "card*", "'; DROP TABLE faxes; --", "ümlaut"])
def test_any_user_text_is_a_safe_full_text_query(built, corpus, q):
    _, metas = corpus
    rows, _ = built.search(q=q, limit=1000)
    if q != "card*":
        assert [row["id"] for row in rows] == reference(metas, q=q)
    assert built.count() == len(metas)


def test_a_word_with_a_star_is_a_prefix(built, corpus):
    _, metas = corpus
    rows, _ = built.search(q="cardio*", limit=1000)
    assert [row["id"] for row in rows] == reference(metas, q="cardiology")
    assert fts_query('card* "x') == '"card"* "x"'


@pytest.mark.parametrize("q", ["", "   ", "\"", "***", "-- ()", "_", "(((", "\"\"\""])
def test_a_query_without_a_word_is_refused(built, q):
    with pytest.raises(IndexQueryError) as caught:
        built.search(q=q)
    assert caught.value.param == "q"


def test_ocr_text_is_searchable_and_survives_a_new_meta(built, corpus, tmp_path):
    root, metas = corpus
    index = ArchiveIndex(tmp_path / "index.db")
    index.rebuild(root)
    meta = metas[5]
    assert index.set_ocr_text(meta["id"], "Referral for Jane Doe, echocardiogram")
    assert [row["id"] for row in index.search(q="echocardiogram")[0]] == [meta["id"]]
    changed = dict(meta, status="received", reason="")
    index.upsert(changed, index.get_folder(meta["id"]))
    assert [row["id"] for row in index.search(q="jane doe")[0]] == [meta["id"]]
    assert not index.set_ocr_text("no-such-fax", "x")


# -- parameters -------------------------------------------------------------------------------

@pytest.mark.parametrize(("param", "value"), [
    ("limit", 0), ("limit", 1001), ("limit", -1), ("limit", "ten"), ("limit", True), ("limit", 2.5),
    ("cursor", "!!!"), ("cursor", "abc"), ("cursor", base64.urlsafe_b64encode(b"nan|x").decode()),
    ("cursor", base64.urlsafe_b64encode(b"12.5|").decode()), ("cursor", base64.urlsafe_b64encode(b"soon|x").decode()),
    ("cursor", base64.urlsafe_b64encode(b"\xff\xfe|x").decode()), ("cursor", "A" * 400),
    ("since", "yesterday"), ("since", "2026-13-01"), ("until", "2026-12-06T25:00:00Z"), ("since", float("nan")),
    ("direction", "sideways"), ("direction", ""), ("status", ""), ("status", "DROP TABLE"), ("status", ",,"),
    ("caller", ""), ("caller", "   "), ("did", "9" * 65), ("remote_ident", " "),
])
def test_a_bad_parameter_is_refused_naming_it(built, param, value):
    with pytest.raises(IndexQueryError) as caught:
        built.search(**{param: value})
    assert caught.value.param == param
    assert param in str(caught.value)


def test_until_before_since_is_refused(built):
    with pytest.raises(IndexQueryError) as caught:
        built.search(since="2026-06-02T00:00:00Z", until="2026-06-01T00:00:00Z")
    assert caught.value.param == "until"


def test_times_may_be_dates_offsets_datetimes_or_seconds(built, corpus):
    _, metas = corpus
    day = dt.datetime.fromtimestamp(EPOCH + 5 * DAY, tz=dt.UTC).replace(hour=0, minute=0, second=0, microsecond=0)
    expected = reference(metas, since=day.timestamp())
    for since in (day.strftime("%Y-%m-%d"), day.isoformat(), day.astimezone(dt.timezone(dt.timedelta(hours=2))).isoformat(),
                  day, day.timestamp(), day.strftime("%Y-%m-%dT%H:%M:%SZ")):
        assert page_through(built, 1000, since=since) == expected, since


def test_a_limit_given_as_text_is_taken(built):
    rows, cursor = built.search(limit="3")
    assert len(rows) == 3 and cursor is not None


def test_number_keys_make_trailing_digits_a_prefix():
    assert number_key("+1 (555) 0555") == "55505551"
    assert number_key(" Anonymous ") == "~anonymous"


def test_the_filters_use_indexes(built):
    """No search scans the table for its filter: each is answered by an index walk (the
    unfiltered list walks the ordering index and stops at the page's end)."""
    assert built.query_plan() == ["SCAN faxes USING INDEX faxes_newest"]
    for filters in ({"since": "2026-06-01"}, {"status": "received"}, {"direction": "outbound"},
                    {"route": "default"}, {"caller": "0555"}, {"did": "100"}, {"caller": "anonymous"},
                    {"status": "sent", "since": "2026-06-01", "until": "2026-06-05"}):
        plan = " | ".join(built.query_plan(**filters))
        assert "SEARCH faxes USING INDEX" in plan and "SCAN faxes" not in plan, (filters, plan)
    _, cursor = built.search(limit=5)
    assert "(started_at,id)<(?,?)" in " ".join(built.query_plan(cursor=cursor))
    # A chunk of full-text matches is the outer loop, even beside a filter with an index.
    for filters in ({"q": "acme"}, {"q": "acme", "status": "received"}, {"remote_ident": "acme", "route": "default"}):
        plan = built.query_plan(**filters)
        assert plan[0].startswith("SCAN json_each") and "(sort_key=?)" in plan[1], (filters, plan)


# -- writing -------------------------------------------------------------------------------------

def test_rebuild_from_the_folders_equals_the_rows_of_incremental_upserts(corpus, tmp_path):
    root, metas = corpus
    rng = random.Random(3)
    folders = {folder.name: folder for folder in archive.iter_faxes(root)}
    incremental = ArchiveIndex(tmp_path / "incremental.db")
    for meta in rng.sample(metas, len(metas)):
        early = dict(meta, status="failed", reason="in progress", in_progress=True, ended_at=None, pages=[])
        assert incremental.upsert(early, folders[meta["id"]])  # the call as it began
        assert incremental.upsert(meta, folders[meta["id"]])
        assert not incremental.upsert(meta, folders[meta["id"]])  # the same meta again: no change
    rebuilt = ArchiveIndex(tmp_path / "rebuilt.db")
    assert rebuilt.rebuild(root) == len(metas)
    for meta in metas:
        one, other = incremental.get_row(meta["id"]), rebuilt.get_row(meta["id"])
        assert one is not None and other is not None
        del one["updated_at"], other["updated_at"], one["sort_key"], other["sort_key"]  # order of arrival
        assert one == other
    for filters in SINGLE_FILTERS:
        assert page_through(incremental, 1000, **as_search_args(filters)) == \
            page_through(rebuilt, 1000, **as_search_args(filters))


def test_an_unchanged_meta_leaves_the_row_alone(tmp_path, corpus):
    _, metas = corpus
    now = iter(itertools.count(1000))
    index = ArchiveIndex(tmp_path / "index.db", clock=lambda: float(next(now)))
    folder = tmp_path / "f"
    index.upsert(metas[0], folder)
    before = index.get_row(metas[0]["id"])
    assert not index.upsert(dict(metas[0]), folder)
    assert index.get_row(metas[0]["id"]) == before
    assert index.upsert(dict(metas[0], status="received"), folder)
    after = index.get_row(metas[0]["id"])
    assert after is not None and before is not None
    assert after["updated_at"] > before["updated_at"] and after["status"] == "received"
    assert index.count() == 1


def test_rebuild_drops_faxes_whose_folder_is_gone_and_adds_new_ones(corpus, tmp_path):
    root, metas = corpus
    copy = tmp_path / "archive"
    shutil.copytree(root, copy)
    index = ArchiveIndex(tmp_path / "index.db")
    index.rebuild(copy)
    gone = metas[10]
    shutil.rmtree(index.get_folder(gone["id"]))
    added = make_meta(random.Random(5), EPOCH + 61 * DAY)
    write_fax(copy, added, random.Random(5))
    assert index.rebuild(copy) == len(metas)
    assert index.get_folder(gone["id"]) is None
    assert index.get_folder(added["id"]) is not None
    assert index.count() == len(metas)
    assert page_through(index, 1000) == reference([m for m in metas if m is not gone] + [added])


def test_rebuild_keeps_a_fax_written_after_its_walk_and_skips_unreadable_folders(corpus, tmp_path):
    root, metas = corpus
    copy = tmp_path / "archive"
    shutil.copytree(root, copy)
    elsewhere = tmp_path / "elsewhere"
    index = ArchiveIndex(tmp_path / "index.db")
    late = make_meta(random.Random(8), EPOCH)
    index.upsert(late, write_fax(elsewhere, late, random.Random(8)))  # its folder is not under copy
    broken = archive.fax_folder(copy, "broken-fax", EPOCH)
    archive.write_atomic(broken / archive.META_NAME, b"{not json")
    no_id = archive.fax_folder(copy, "list-fax", EPOCH)
    archive.write_atomic(no_id / archive.META_NAME, b"[1, 2]")
    assert index.rebuild(copy) == len(metas)
    assert index.get_folder(late["id"]) is not None  # its meta.json still exists
    assert index.get_folder("broken-fax") is None and index.get_folder("list-fax") is None


def test_the_index_file_is_private_and_reopens_with_its_rows(corpus, tmp_path):
    root, metas = corpus
    path = tmp_path / "state" / "index.db"
    old_umask = os.umask(0o022)
    try:
        index = ArchiveIndex(path)
        index.rebuild(root)
    finally:
        os.umask(old_umask)
    for name in ("index.db", "index.db-wal", "index.db-shm"):
        if (path.parent / name).exists():
            assert stat.S_IMODE(os.stat(path.parent / name).st_mode) == 0o600, name
    assert stat.S_IMODE(os.stat(path.parent).st_mode) == 0o700
    index.close()
    again = ArchiveIndex(path)
    assert not again.needs_rebuild
    assert again.count() == len(metas)


def test_an_index_of_another_schema_version_is_emptied_for_a_rebuild(tmp_path):
    import sqlite3
    path = tmp_path / "index.db"
    db = sqlite3.connect(path)
    db.execute("CREATE TABLE faxes (id TEXT)")
    db.execute("PRAGMA user_version = 99")
    db.commit()
    db.close()
    index = ArchiveIndex(path)
    assert index.needs_rebuild and index.count() == 0
    index.upsert(make_meta(random.Random(1), EPOCH), tmp_path)
    assert index.count() == 1


def test_a_file_that_is_not_a_database_is_an_archive_index_error(tmp_path):
    from t38gw.index import ArchiveIndexError
    path = tmp_path / "index.db"
    path.write_bytes(b"this is not a database file at all" * 100)
    with pytest.raises(ArchiveIndexError):
        ArchiveIndex(path)


def test_threads_share_an_index(corpus, tmp_path):
    root, metas = corpus
    index = ArchiveIndex(tmp_path / "index.db")
    errors: list[BaseException] = []

    def upsert_some(part: list[dict[str, Any]]) -> None:
        try:
            for meta in part:
                index.upsert(meta, tmp_path / meta["id"])
                index.search(limit=5, q="acme")
        except BaseException as exc:  # noqa: BLE001 - handed to the test thread
            errors.append(exc)

    threads = [threading.Thread(target=upsert_some, args=(metas[n::4],)) for n in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    assert not errors and not any(thread.is_alive() for thread in threads)
    assert index.count() == len(metas)
    index.close()


def test_a_meta_without_an_id_is_refused(tmp_path):
    index = ArchiveIndex(tmp_path / "index.db")
    with pytest.raises(ValueError):
        index.upsert({"direction": "inbound"}, tmp_path)


def test_a_meta_without_a_start_time_sorts_by_its_uuid7_time(tmp_path):
    index = ArchiveIndex(tmp_path / "index.db")
    fax_id = new_fax_id(EPOCH + 12.5, random.Random(1))
    index.upsert({"id": fax_id, "direction": "inbound", "status": "failed"}, tmp_path)
    row = index.get_row(fax_id)
    assert row is not None and row["started_at"] == EPOCH + 12.5
    assert index.search(since=EPOCH + 12, until=EPOCH + 13)[0][0]["started_at"] is None


# -- metas written by today's code ------------------------------------------------------------------

def test_a_real_inbound_record_and_outbound_job_are_indexed(tmp_path):
    root = tmp_path / "archive"
    rng = random.Random(11)
    started_at = EPOCH + 3600.25
    record = InboundFax(fax_id=new_fax_id(started_at, rng), started_at=started_at, root=root, formats=("pdf", "tiff"),
                        sip={"call_id": "c1", "caller": "+1 555 0555", "did": "+15550100", "trunk": "carrier"},
                        route_index=0, route=Route(), local_ident="+1 555 0100")
    index = ArchiveIndex(tmp_path / "index.db")
    record.write(*record.snapshot())  # the call began: in progress
    index.upsert(archive.read_meta(record.folder), record.folder)
    assert index.search(status="failed")[0][0]["id"] == record.fax_id
    record.meta["t30"]["remote_ident"] = "Cardio Clinic"
    record.add_page(Page(1728, 64, 204.0, 98.0, bytes(216 * 64)), 0)
    record.finish("received", "", started_at + 40)
    record.write(*record.snapshot())
    final = archive.read_meta(record.folder)
    index.upsert(final, record.folder)
    assert index.is_consistent_with(final, record.folder)

    created = EPOCH + 7200.5
    target = DialTarget(to="+1 555 0199", uri="sip:+15550199@198.51.100.10", number="+15550199", trunk="carrier")
    job_id = new_fax_id(created, rng)
    job = initial_meta(job_id, created, SendOptions(to="+1 555 0199", cover=False), target, Config(),
                       [Page(1728, 64, 204.0, 196.0, bytes(216 * 64))])
    job_folder = archive.fax_folder(root, job_id, created)
    archive.write_meta(job_folder, job)

    rebuilt = ArchiveIndex(tmp_path / "rebuilt.db")
    assert rebuilt.rebuild(root) == 2
    rows, _ = rebuilt.search()
    assert [row["id"] for row in rows] == [job_id, record.fax_id]
    assert rows[0] | {} == {"id": job_id, "direction": "outbound", "status": "queued", "reason": "",
                            "started_at": archive.rfc3339(created), "ended_at": None, "pages": 1, "caller": "",
                            "did": "+15550199", "remote_ident": "", "route": "", "media": "t38", "to": "+1 555 0199"}
    assert rows[1] == {"id": record.fax_id, "direction": "inbound", "status": "received", "reason": "",
                       "started_at": archive.rfc3339(started_at), "ended_at": archive.rfc3339(started_at + 40),
                       "pages": 1, "caller": "+1 555 0555", "did": "+15550100", "remote_ident": "Cardio Clinic",
                       "route": "routes[0]", "media": None, "to": ""}
    assert [r["id"] for r in rebuilt.search(q="cardio carrier")[0]] == [record.fax_id]
    assert [r["id"] for r in rebuilt.search(did="0199", direction="outbound")[0]] == [job_id]
    assert [r["id"] for r in rebuilt.search(q="5550199")[0]] == [job_id]
    row = rebuilt.get_row(job_id)
    assert row is not None and row["in_progress"] == 1 and row["trunk"] == "carrier"


@pytest.mark.parametrize("chunk", [1, 2, 5])
def test_full_text_read_in_small_chunks_keeps_the_exact_order(corpus, tmp_path, monkeypatch, chunk):
    """The newest matches are read a chunk at a time, each chunk completed to a whole
    millisecond; tiny chunks split the 10 faxes that share one start instant, which arrive
    in an order other than their ids' (so their sort keys are not in id order)."""
    import t38gw.index
    monkeypatch.setattr(t38gw.index, "FTS_CHUNK", chunk)
    _, metas = corpus
    built = ArchiveIndex(tmp_path / "index.db")
    for meta in sorted(metas, key=lambda m: m["id"], reverse=True):
        built.upsert(meta, tmp_path / meta["id"])
    tied_at = started(metas[0])
    for filters in ({"q": "gateway"}, {"q": "acme"}, {"q": "routes"}, {"q": "gateway", "status": "failed"},
                    {"q": "gateway", "since": tied_at - DAY, "until": round(tied_at + 0.001, 3)},
                    {"q": "gateway", "until": tied_at}, {"q": "5550100", "direction": "outbound"},
                    {"remote_ident": "acme"}, {"remote_ident": "ac"}, {"remote_ident": "acme", "q": "labs"}):
        for limit in (1, 4, 100):
            assert page_through(built, limit, **as_search_args(filters)) == reference(metas, **filters), filters


def test_a_fax_whose_start_time_changes_moves_in_the_order_and_keeps_its_ocr_text(corpus, tmp_path):
    root, metas = corpus
    index = ArchiveIndex(tmp_path / "index.db")
    index.rebuild(root)
    meta = metas[20]
    folder = index.get_folder(meta["id"])
    assert index.set_ocr_text(meta["id"], "echocardiogram")
    moved = dict(meta, started_at=archive.rfc3339(EPOCH + 70 * DAY))
    assert index.upsert(moved, folder)
    rows, _ = index.search(limit=1)
    assert rows[0]["id"] == meta["id"]
    assert [row["id"] for row in index.search(q="echocardiogram")[0]] == [meta["id"]]
    assert page_through(index, 1000, q="gateway") == reference([moved if m is meta else m for m in metas], q="gateway")


def test_a_write_that_cannot_get_the_lock_is_an_archive_index_error_and_changes_nothing(tmp_path, monkeypatch):
    import sqlite3

    import t38gw.index
    from t38gw.index import ArchiveIndexError
    monkeypatch.setattr(t38gw.index, "BUSY_TIMEOUT_SECONDS", 0.05)
    index = ArchiveIndex(tmp_path / "index.db")
    meta = make_meta(random.Random(2), EPOCH)
    other = sqlite3.connect(tmp_path / "index.db", isolation_level=None)
    other.execute("BEGIN IMMEDIATE")  # another process holds the write lock
    with pytest.raises(ArchiveIndexError):
        index.upsert(meta, tmp_path)
    assert index.count() == 0  # readers are not blocked (WAL)
    other.execute("ROLLBACK")
    other.close()
    assert index.upsert(meta, tmp_path) and index.count() == 1


def test_connections_of_threads_that_ended_are_closed(tmp_path):
    # trio's worker threads come and go; each opened its own connection to the index,
    # kept forever (a one-minute soak held 68 of them and 155 MiB).
    index = ArchiveIndex(tmp_path / "index.db")

    def query() -> None:
        index.search(limit=1)

    def in_threads(count: int) -> None:
        for _ in range(count):
            thread = threading.Thread(target=query)
            thread.start()
            thread.join(10)

    def index_fds() -> int:
        targets = [os.readlink(f"/proc/self/fd/{fd}") for fd in os.listdir("/proc/self/fd")
                   if os.path.exists(f"/proc/self/fd/{fd}")]
        return sum(1 for target in targets if target.startswith(str(tmp_path)))

    try:
        in_threads(5)
        after_five = index_fds()
        in_threads(30)
        assert len(index._connections) <= 2  # this thread's and the last thread's
        # SQLite keeps a closed connection's descriptor for reuse while others hold locks
        # on the file: a few, not one per thread that ever ran.
        assert index_fds() == after_five
    finally:
        index.close()
