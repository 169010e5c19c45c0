"""Test-wide fixtures and the CI rule: a test that needs a peer never skips in CI.

Third-party data is read from ``../shared/testdata`` (or ``$T38GW_TESTDATA``) and never
copied into the repository.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent


def testdata_dir() -> Path:
    """Where the third-party test data lives: $T38GW_TESTDATA or ../shared/testdata."""
    env = os.environ.get("T38GW_TESTDATA")
    return Path(env) if env else REPO.parent / "shared" / "testdata"


@pytest.fixture(scope="session")
def testdata() -> Path:
    path = testdata_dir()
    if not path.is_dir():
        pytest.fail(f"test data not found at {path}; set T38GW_TESTDATA to the shared/testdata folder")
    return path


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    """Under CI, turn every skip into a failure: a missing peer must fail the run."""
    outcome = yield
    report = outcome.get_result()
    if os.environ.get("CI") and report.skipped and not hasattr(report, "wasxfail"):
        report.outcome = "failed"
        reason = report.longrepr[2] if isinstance(report.longrepr, tuple) else str(report.longrepr)
        report.longrepr = f"skipped under CI (a test must not skip for a missing peer): {reason}"
