"""The archive index and meta.json stay consistent across ``kill -9`` at any point of a
fax's writes (issue 15).

A child process runs the gateway's write sequence for one inbound fax - the index row
first (in progress), then for each confirmed page the page journal + meta.json and the
row, then the final meta.json and the row (``Gateway._index_upsert`` / ``_write_record``
order) - and SIGKILLs itself at the k-th durable step (every ``fsync``, ``rename`` and
SQLite commit counts as one).  After each kill the parent runs the start-up recovery the
gateway runs (``recover_archive`` over ``index.folders_to_recover``) and checks: every
folder with a meta.json has exactly the row that meta.json gives; no row is left whose
folder has none; a fax the child finished is found as it was finished.  k runs from 1
until the child finishes without reaching its k-th step, so no step is left untested.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

from t38gw import archive
from t38gw.config import ArchiveConfig, Config
from t38gw.faxrecord import recover_archive
from t38gw.index import ArchiveIndex
from t38gw.spool import Spool

CHILD = r'''
import os, random, signal, sqlite3, sys
from pathlib import Path
sys.path.insert(0, sys.argv[4])
kill_at = int(sys.argv[3])
steps = 0
def step():
    global steps
    steps += 1
    if steps == kill_at:
        os.kill(os.getpid(), signal.SIGKILL)
real_fsync, real_replace = os.fsync, os.replace
def fsync(fd):
    real_fsync(fd); step()
def replace(a, b, **kw):
    real_replace(a, b, **kw); step()
os.fsync, os.replace = fsync, replace

from imaging import Page
from t38gw.config import Route
from t38gw.faxrecord import InboundFax
from t38gw.index import ArchiveIndex
from tests.t38gw.t30.pages import random_page

root, index_path = Path(sys.argv[1]), Path(sys.argv[2])
index = ArchiveIndex(index_path)
real_upsert = index.upsert
def upsert(meta, folder):
    changed = real_upsert(meta, folder); step(); return changed
index.upsert = upsert
rng = random.Random(7)
record = InboundFax(fax_id="01a21438-6359-7817-b310-bde014280622", started_at=1_764_000_000.0, root=root,
                    formats=("pdf", "tiff"), sip={"call_id": "c1", "caller": "5550199", "did": "5550100"},
                    route_index=None, route=Route(), local_ident="+1 555 0100")
index.upsert(record.meta, record.folder)          # the row first: the call was accepted
for _ in range(2):
    record.add_page(Page(1728, 40, 204, 196, random_page(rng, 1728, 40)), bad_rows=0)
    pages, meta = record.snapshot()
    record.write(pages, meta)                       # journal + meta.json
    index.upsert(meta, record.folder)               # then the row
    record.forget_written()
record.finish("received", "", 1_764_000_100.0)
pages, meta = record.snapshot()
record.write(pages, meta)
index.upsert(meta, record.folder)
print("finished", steps)
'''


def check_consistent(root: Path, index: ArchiveIndex) -> list[dict]:
    metas = []
    for folder in archive.iter_faxes(root):
        meta = archive.read_meta(folder)
        metas.append(meta)
        assert index.is_consistent_with(meta, folder), (meta, index.get_row(meta["id"]))
    rows, _ = index.search(limit=1000)
    for row in rows:
        folder = index.get_folder(row["id"])
        assert folder is not None and (folder / "meta.json").is_file(), row
    return metas


def test_index_and_meta_json_agree_after_a_kill_at_every_step(tmp_path):
    repo = Path(__file__).resolve().parents[2]
    kill_at = 1
    finished_steps = None
    while finished_steps is None:
        work = tmp_path / f"k{kill_at}"
        root, index_path = work / "archive", work / "index.db"
        root.mkdir(parents=True)
        child = subprocess.run([sys.executable, "-c", CHILD, str(root), str(index_path), str(kill_at), str(repo)],
                               capture_output=True, text=True, timeout=120, cwd=repo)
        if child.returncode == 0:
            finished_steps = int(child.stdout.split()[-1])
        else:
            assert child.returncode == -9, child.stderr  # killed, not crashed
        # The restart: open the index, recover from it (as Gateway.run does).
        index = ArchiveIndex(index_path)
        spool = Spool(work / "spool.db")
        try:
            config = Config(archive=ArchiveConfig(dir=str(root)))
            recover_archive(root, spool, config, now=time.time(), jobs=frozenset(),
                            folders=index.folders_to_recover(ended_since=0.0), index=index)
            metas = check_consistent(root, index)
            for meta in metas:
                assert not meta["in_progress"], meta  # closed by the recovery
            if finished_steps is not None:
                [meta] = metas
                assert meta["status"] == "received" and len(meta["pages"]) == 2
                assert json.loads((root.glob("**/meta.json").__next__()).read_text())["status"] == "received"
        finally:
            index.close()
            spool.close()
        kill_at += 1
        assert kill_at < 200, "the write sequence never finished"
    assert finished_steps >= 8  # row, 2 x (journal fsyncs, meta rename, row), final documents, row
