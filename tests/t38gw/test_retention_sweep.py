"""The gateway's daily retention sweep, end to end on a real archive, index, spool and
audit trail (a fake clock: ``sweep_once(now)``): exactly the expired, unheld, finished
faxes go - folder, index row, spool rows - each with a ``fax_deleted`` audit line."""

from __future__ import annotations

import random
import sqlite3

from t38gw import archive
from t38gw.audit import history, verify_trail
from t38gw.config import ArchiveConfig, Config, HttpConfig, RetentionConfig
from t38gw.gateway import Gateway
from t38gw.ids import new_fax_id
from t38gw.retention import place_hold

DAY = 86400.0
NOW = 1_800_000_000.0


def make_fax(gateway: Gateway, rng: random.Random, *, age_days: float, in_progress: bool = False) -> str:
    started = NOW - age_days * DAY
    fax_id = new_fax_id(started, rng)
    folder = archive.fax_folder(gateway.archive_root, fax_id, started)
    meta = {"id": fax_id, "direction": "inbound", "status": "received", "reason": "", "in_progress": in_progress,
            "started_at": archive.rfc3339(started), "ended_at": None if in_progress else archive.rfc3339(started + 60),
            "sip": {"caller": "5550199", "did": "5550100"}, "t30": {}, "pages": [], "deliveries": []}
    archive.write_meta(folder, meta)
    gateway.index.upsert(meta, folder)
    gateway.spool.enqueue(id=f"msg_{fax_id}", webhook="default", url="http://127.0.0.1:9/fax",
                          event_type="fax.received", fax_id=fax_id, body=b'{"patient": "data"}', now=started + 61)
    return fax_id


def test_the_sweep_deletes_exactly_the_expired_unheld_faxes(tmp_path):
    config = Config(archive=ArchiveConfig(dir=str(tmp_path / "archive"), audit_log=str(tmp_path / "audit.jsonl"),
                                          index=str(tmp_path / "index.db")),
                    spool=str(tmp_path / "spool.db"), http=HttpConfig(listen=("127.0.0.1", 9)),
                    retention=RetentionConfig(keep_days=30))
    gateway = Gateway(config, rng=random.Random(3))
    rng = random.Random(4)
    try:
        old = [make_fax(gateway, rng, age_days=40 + n) for n in range(3)]
        recent = make_fax(gateway, rng, age_days=10)
        held = make_fax(gateway, rng, age_days=100)
        running = make_fax(gateway, rng, age_days=50, in_progress=True)
        # The hold is placed after the index row was written (as a race would have it):
        # meta.json, re-read by the sweep, wins.
        place_hold(gateway.index.get_folder(held), reason="litigation", by="test", now=NOW)
        items = gateway.sweep_once(NOW)
        assert sorted(i.fax_id for i in items if i.deleted) == sorted(old)
        for fax_id in old:
            assert gateway.index.get_folder(fax_id) is None
            assert not list((tmp_path / "archive").rglob(fax_id))
        for fax_id in (recent, held, running):
            folder = gateway.index.get_folder(fax_id)
            assert folder is not None and (folder / "meta.json").is_file()
        with sqlite3.connect(config.spool) as db:
            left = {row[0] for row in db.execute("SELECT fax_id FROM deliveries")}
        assert left == {recent, held, running}
        gateway.audit_log.close()
        assert verify_trail(config.archive.audit_log).first_broken is None
        for fax_id in old:
            [line] = history(config.archive.audit_log, fax_id)
            assert line["event"] == "fax_deleted" and line["keep_days"] == 30
        assert not history(config.archive.audit_log, held)
        # A second sweep finds nothing more to delete.
        assert not [i for i in gateway.sweep_once(NOW) if i.deleted]
    finally:
        gateway.spool.close()
