"""The layering rules of DESIGN.md and STYLE.md 1, checked on the source text.

Every module is parsed with ``ast`` (nothing is imported or run), so a rule also holds for
an import inside a function and for ``importlib.import_module("...")`` / ``__import__``
with a literal name.  The rules:

1. ``sip``, ``udptl``, ``imaging`` and ``rtp`` never import ``t38gw`` or each other (DESIGN.md
   "Packages and their boundaries"); ``t38gw`` wires them.
2. The protocol cores - ``sip``, ``udptl``, ``imaging``, ``rtp``, ``t38gw/t30`` and the call-control
   core ``t38gw/call.py`` with ``t38gw/negotiation.py`` - never import ``trio`` or
   ``socket`` (nor ``asyncio``/``selectors``), except the I/O edges named in ``IO_EDGES``.
3. No core imports an I/O edge module either (an edge is a leaf: importing one would pull
   trio in through the back door).
4. In the service, ``t38gw/``, only the runtime edge (``SERVICE_RUNTIME_EDGE``) imports
   ``trio``.
5. No core reads a clock (``time.time``, ``time.monotonic``, ``trio.current_time``, ...):
   cores take ``now`` as an input; only the edges read it.

Each rule is run once on the repository and once on small sources built to break it, so
none of them can pass by finding nothing; ``test_a_doctored_copy_fails`` also runs the
real scan on a copy of the packages with one bad line added.
"""

from __future__ import annotations

import ast
import shutil
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent

LIBRARIES = ("sip", "udptl", "imaging", "rtp")
CORE_PACKAGES = ("sip", "udptl", "imaging", "rtp", "t38gw/t30")
CORE_MODULES = ("t38gw/call.py", "t38gw/negotiation.py")  # the call-control core (when present)
FORBIDDEN_IN_CORES = ("trio", "socket", "asyncio", "selectors")  # the last two: any other way to a loop

# The only modules of the cores that touch trio and sockets and read the clock.
IO_EDGES = {
    "sip/transport.py": "the SIP transports (UDP, TCP, TLS sockets) feeding the sans-IO UA with trio.current_time()",
    "udptl/endpoint.py": "one call's UDPTL socket and the port pool, feeding the receiver with trio.current_time()",
}

# The service's runtime edge: the t38gw modules that import trio today, each for a reason.
# (t38gw/api.py is an ASGI app: it runs on hypercorn's trio worker, started by the
# gateway, but imports no trio itself.)
SERVICE_RUNTIME_EDGE = {
    "t38gw/gateway.py": "lifecycle and the event pump: the nursery, SIP endpoint, UDPTL port pool, HTTP server, signals",
    "t38gw/session.py": "one call's media task: waits on the UDPTL endpoint and the engine's deadlines",
    "t38gw/delivery.py": "the webhook delivery loop: sleeps until the next retry, wakes on new spool entries",
    "t38gw/cli.py": "the entry point: trio.run(serve, config)",
    "t38gw/workers.py": "the supervisor of several worker processes: relays SIP datagrams, restarts workers, signals",
}

# Qualified names that read a clock.
CLOCKS = frozenset(
    {
        "time.time",
        "time.time_ns",
        "time.monotonic",
        "time.monotonic_ns",
        "time.perf_counter",
        "time.perf_counter_ns",
        "time.process_time",
        "time.clock_gettime",
        "time.clock_gettime_ns",
        "trio.current_time",
        "datetime.datetime.now",
        "datetime.datetime.utcnow",
        "datetime.datetime.today",
        "datetime.date.today",
    }
)


@dataclass(frozen=True)
class Import:
    module: str  # absolute dotted name
    line: int


def module_files(root: Path, package: str) -> Iterator[str]:
    """Repository-relative paths of the package's modules."""
    for path in sorted((root / package).rglob("*.py")):
        if "__pycache__" not in path.parts:
            yield path.relative_to(root).as_posix()


def imports_of(source: str, relpath: str) -> list[Import]:
    """Every module ``source`` imports, anywhere in it, relative imports resolved."""
    package = relpath.removesuffix(".py").split("/")[:-1]
    found: list[Import] = []
    for node in ast.walk(ast.parse(source, relpath)):
        if isinstance(node, ast.Import):
            found += [Import(alias.name, node.lineno) for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package[: len(package) - (node.level - 1)]
                module = ".".join(base + (node.module.split(".") if node.module else []))
            else:
                module = node.module or ""
            found.append(Import(module, node.lineno))
            # ``from pkg import name``: name may be a submodule (``from sip import transport``).
            found += [Import(f"{module}.{alias.name}", node.lineno) for alias in node.names if alias.name != "*"]
        elif (
            isinstance(node, ast.Call)
            and (
                (isinstance(node.func, ast.Name) and node.func.id == "__import__")
                or (isinstance(node.func, ast.Attribute) and node.func.attr == "import_module")
            )
            and node.args
            and isinstance(node.args[0], ast.Constant)
            and isinstance(node.args[0].value, str)
        ):
            found.append(Import(node.args[0].value, node.lineno))
    return found


def clock_reads(source: str, relpath: str) -> list[tuple[int, str]]:
    """(line, qualified name) of every reference to a clock function in ``source``,
    through any import alias (``import time as t``, ``from time import monotonic``)."""
    tree = ast.parse(source, relpath)
    aliases: dict[str, str] = {}
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                if alias.asname:
                    aliases[alias.asname] = alias.name
                else:
                    top = alias.name.split(".")[0]
                    aliases[top] = top
        elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
            for alias in node.names:
                aliases[alias.asname or alias.name] = f"{node.module}.{alias.name}"

    def qualified(node: ast.expr) -> str | None:
        if isinstance(node, ast.Name):
            return aliases.get(node.id)
        if isinstance(node, ast.Attribute):
            base = qualified(node.value)
            return f"{base}.{node.attr}" if base else None
        return None

    reads = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Name | ast.Attribute):
            name = qualified(node)
            if name in CLOCKS:
                reads.append((node.lineno, name))
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.module and not node.level:
            reads += [(node.lineno, f"{node.module}.{a.name}") for a in node.names if f"{node.module}.{a.name}" in CLOCKS]
    return sorted(set(reads))


def _top(module: str) -> str:
    return module.split(".")[0]


def _first_per_line(problems: list[tuple[int, str]]) -> list[str]:
    """One finding per import statement (``from x import y`` is seen as x and x.y)."""
    seen: dict[int, str] = {}
    for line, problem in problems:
        seen.setdefault(line, problem)
    return [seen[line] for line in sorted(seen)]


def _edge_module(relpath: str) -> str:
    return relpath.removesuffix(".py").replace("/", ".")


EDGE_MODULES = frozenset(_edge_module(path) for path in [*IO_EDGES, *SERVICE_RUNTIME_EDGE])


def core_files(root: Path) -> list[str]:
    files = [path for package in CORE_PACKAGES for path in module_files(root, package)]
    return files + [path for path in CORE_MODULES if (root / path).is_file()]


# ------------------------------------------------------------------ the rules


def library_boundary_violations(source: str, relpath: str) -> list[str]:
    """Rule 1 for one module of ``sip``, ``udptl`` or ``imaging``."""
    own = relpath.split("/")[0]
    banned = {"t38gw", *LIBRARIES} - {own}
    return _first_per_line([
        (imp.line, f"{relpath}:{imp.line} imports {imp.module} ({own} never imports t38gw or another library: DESIGN.md)")
        for imp in imports_of(source, relpath)
        if _top(imp.module) in banned
    ])


def core_io_violations(source: str, relpath: str) -> list[str]:
    """Rules 2 and 3 for one core module."""
    if relpath in IO_EDGES:
        return []
    problems = []
    for imp in imports_of(source, relpath):
        if _top(imp.module) in FORBIDDEN_IN_CORES:
            problems.append((imp.line, f"{relpath}:{imp.line} imports {imp.module} (a sans-IO core; only {sorted(IO_EDGES)} may)"))
        elif imp.module in EDGE_MODULES:
            problems.append((imp.line, f"{relpath}:{imp.line} imports the I/O edge {imp.module} (edges are leaves no core imports)"))
    return _first_per_line(problems)


def service_trio_violations(source: str, relpath: str) -> list[str]:
    """Rule 4 for one module of ``t38gw``."""
    if relpath in SERVICE_RUNTIME_EDGE:
        return []
    return _first_per_line([
        (imp.line, f"{relpath}:{imp.line} imports {imp.module} (only the runtime edge {sorted(SERVICE_RUNTIME_EDGE)} imports trio)")
        for imp in imports_of(source, relpath)
        if _top(imp.module) == "trio"
    ])


def core_clock_violations(source: str, relpath: str) -> list[str]:
    """Rule 5 for one core module."""
    if relpath in IO_EDGES:
        return []
    return [
        f"{relpath}:{line} reads the clock ({name}); a core takes `now` as an input"
        for line, name in clock_reads(source, relpath)
    ]


def scan(root: Path) -> list[str]:
    """Every violation of the five rules in the tree at ``root``."""
    problems: list[str] = []

    def text(relpath: str) -> str:
        return (root / relpath).read_text(encoding="utf-8")

    for package in LIBRARIES:
        for relpath in module_files(root, package):
            problems += library_boundary_violations(text(relpath), relpath)
    for relpath in core_files(root):
        problems += core_io_violations(text(relpath), relpath)
        problems += core_clock_violations(text(relpath), relpath)
    for relpath in module_files(root, "t38gw"):
        problems += service_trio_violations(text(relpath), relpath)
    return problems


# ------------------------------------------------------------------ on the repository


def test_the_scan_sees_the_packages():
    cores = core_files(REPO)
    for expected in ("sip/transaction.py", "sip/transport.py", "udptl/receiver.py", "udptl/endpoint.py", "imaging/decoder.py"):
        assert expected in cores
    assert sum(path.startswith("t38gw/t30/") for path in cores) >= 3
    assert "t38gw/gateway.py" in list(module_files(REPO, "t38gw"))


def test_libraries_never_import_t38gw_or_each_other():
    problems = [p for package in LIBRARIES for path in module_files(REPO, package)
                for p in library_boundary_violations((REPO / path).read_text(encoding="utf-8"), path)]
    assert problems == []


def test_cores_never_import_trio_socket_or_an_edge():
    problems = [p for path in core_files(REPO) for p in core_io_violations((REPO / path).read_text(encoding="utf-8"), path)]
    assert problems == []


def test_only_the_service_runtime_edge_imports_trio():
    problems = [p for path in module_files(REPO, "t38gw")
                for p in service_trio_violations((REPO / path).read_text(encoding="utf-8"), path)]
    assert problems == []


def test_cores_never_read_a_clock():
    problems = [p for path in core_files(REPO) for p in core_clock_violations((REPO / path).read_text(encoding="utf-8"), path)]
    assert problems == []


def test_the_library_edges_are_exercised():
    """The two library edges do import trio and read its clock, so the core rules above
    pass because they exempt them, not because the scan saw nothing."""
    for path in ("sip/transport.py", "udptl/endpoint.py"):
        source = (REPO / path).read_text(encoding="utf-8")
        assert "trio" in {_top(imp.module) for imp in imports_of(source, path)}, path
        assert ("trio.current_time" in {name for _, name in clock_reads(source, path)}), path
        assert core_io_violations(source, path.replace("/", "/_not_an_edge_")) != []


# ------------------------------------------------------------------ each rule can fail


@pytest.mark.parametrize(
    ("relpath", "source", "expected"),
    [
        ("sip/ua.py", "import t38gw.config\n", "imports t38gw.config"),
        ("sip/ua.py", "from udptl import codec\n", "imports udptl"),
        ("udptl/codec.py", "def f():\n    from imaging.model import Page\n", "udptl/codec.py:2 imports imaging.model"),
        ("imaging/model.py", "import sip as s\n", "imports sip"),
        ("imaging/model.py", "from ..t38gw import faxrecord\n", "imports t38gw"),
    ],
)
def test_rule_library_boundary_can_fail(relpath, source, expected):
    problems = library_boundary_violations(source, relpath)
    assert problems and expected in problems[0]


def test_rule_library_boundary_allows_own_package():
    assert library_boundary_violations("from sip.message import Request\nfrom . import grammar\n", "sip/ua.py") == []
    assert library_boundary_violations("from .model import Page\n", "imaging/tiff.py") == []


@pytest.mark.parametrize(
    ("relpath", "source", "expected"),
    [
        ("sip/ua.py", "import trio\n", "sip/ua.py:1 imports trio"),
        ("udptl/receiver.py", "from trio import sleep\n", "imports trio"),
        ("imaging/decoder.py", "def f():\n    import socket\n", "imaging/decoder.py:2 imports socket"),
        ("t38gw/t30/receiver.py", "import trio.lowlevel\n", "imports trio.lowlevel"),
        ("t38gw/call.py", "from udptl.endpoint import UdptlEndpoint\n", "I/O edge udptl.endpoint"),
        ("t38gw/negotiation.py", "from sip import transport\n", "I/O edge sip.transport"),
        ("sip/ua.py", "from .transport import SipEndpoint\n", "I/O edge sip.transport"),
        ("sip/dialog.py", "import importlib\nt = importlib.import_module('trio')\n", "sip/dialog.py:2 imports trio"),
        ("udptl/latch.py", "s = __import__('socket')\n", "imports socket"),
        ("imaging/bits.py", "import asyncio\n", "imports asyncio"),
    ],
)
def test_rule_core_io_can_fail(relpath, source, expected):
    problems = core_io_violations(source, relpath)
    assert problems and expected in problems[0]


def test_rule_core_io_exempts_only_the_edges():
    assert core_io_violations("import trio\nimport socket as _socket\n", "udptl/endpoint.py") == []
    assert core_io_violations("import trio\n", "sip/transport.py") == []
    assert core_io_violations("import trio\n", "udptl/sender.py") != []


@pytest.mark.parametrize(
    ("relpath", "source"),
    [
        ("t38gw/archive.py", "import trio\n"),
        ("t38gw/faxrecord.py", "async def f():\n    from trio import sleep\n"),
        ("t38gw/routing.py", "import trio as t\n"),
    ],
)
def test_rule_service_trio_can_fail(relpath, source):
    problems = service_trio_violations(source, relpath)
    assert problems and relpath in problems[0]


def test_rule_service_trio_exempts_the_runtime_edge():
    for path in SERVICE_RUNTIME_EDGE:
        assert service_trio_violations("import trio\n", path) == []


@pytest.mark.parametrize(
    ("source", "name"),
    [
        ("import time\nnow = time.time()\n", "time.time"),
        ("import time as t\ndef f():\n    return t.monotonic()\n", "time.monotonic"),
        ("from time import monotonic\nx = monotonic()\n", "time.monotonic"),
        ("from time import perf_counter as pc\n", "time.perf_counter"),
        ("import trio\ndef f():\n    return trio.current_time()\n", "trio.current_time"),
        ("from datetime import datetime\nstamp = datetime.now()\n", "datetime.datetime.now"),
        ("import datetime\nday = datetime.date.today()\n", "datetime.date.today"),
        ("import time\nclock = time.time  # passed on: still a read of the wall clock\n", "time.time"),
    ],
)
def test_rule_clock_can_fail(source, name):
    problems = core_clock_violations(source, "sip/timers.py")
    assert problems and f"({name})" in problems[0]


def test_rule_clock_is_not_fooled_by_names():
    # A parameter called ``now``, a method called ``time`` and time formatting are no clock reads.
    source = (
        "import time\n"
        "def handle_timer(self, now: float) -> None:\n"
        "    self.time(now)\n"
        "    stamp = time.strftime('%Y', time.gmtime(now))\n"
    )
    assert core_clock_violations(source, "sip/timers.py") == []
    assert core_clock_violations("import trio\nx = trio.current_time()\n", "udptl/endpoint.py") == []


def test_a_doctored_copy_fails(tmp_path):
    """The real scan over a copy of the packages: clean as the repository is, then one bad
    line per rule added to real modules, and exactly those are reported."""
    for package in ("sip", "udptl", "imaging", "t38gw"):
        shutil.copytree(REPO / package, tmp_path / package, ignore=shutil.ignore_patterns("__pycache__"))
    assert scan(tmp_path) == []
    doctored = {
        "udptl/sender.py": "\nfrom t38gw.t30 import frames as _frames\n",
        "sip/sdp.py": "\nimport socket as _socket\n",
        "imaging/encoder.py": "\ndef _now():\n    import time\n    return time.monotonic()\n",
        "t38gw/routing.py": "\nimport trio as _trio\n",
        "t38gw/t30/ecm.py": "\nfrom udptl.endpoint import UdptlEndpoint as _E\n",
    }
    for relpath, line in doctored.items():
        with open(tmp_path / relpath, "a", encoding="utf-8") as handle:
            handle.write(line)
    problems = scan(tmp_path)
    assert len(problems) == 5, problems
    for relpath in doctored:
        assert any(problem.startswith(relpath + ":") for problem in problems), (relpath, problems)
