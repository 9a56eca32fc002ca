"""The imports of every module under ``supervisor/`` point down the layers (README).

Bottom to top: ``core`` < ``runs``, ``store``, ``notify`` < ``manager``, ``systemd``,
``metrics`` < ``usecases`` <
``web``, ``cli``, ``service`` < the public facades (``supervisor/__init__.py``,
``scheduler``, ``user``, ``cfgscheduler``, ``__main__``). Packages on one level may import
each other. Every import counts: at module level, inside functions, and under
``TYPE_CHECKING``. The few known exceptions are listed with their reason; one that is no
longer needed fails too, so the list only shrinks.

Inside ``core`` the modules have an order of their own (``CORE_LEVELS``): errors and
leaf helpers < values (definitions, records, access, app) < timing (cron, timing) <
rules (settings, planning, registry, next runs). A core module may import only from
its own level or below, and no two modules may import each other, directly or around a
circle (a cycle such as ``definitions -> registry -> definitions`` fails here even when
both are on one level).
"""

from __future__ import annotations

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parent.parent / "supervisor"

LAYERS: dict[str, int] = {
    "core": 0,
    "runs": 1,
    "store": 1,
    "cluster": 1,
    "notify": 1,
    "manager": 2,
    "metrics": 2,
    "systemd": 2,
    "usecases": 3,
    "web": 4,
    "cli": 4,
    "service": 4,
    # Where an installed package keeps the Admin Center's files and the unit templates
    # (``admin/`` and ``templates/`` of the source tree): data, no code of ours.
    "admin": 0,
    "templates": 0,
}
FACADES = frozenset({"__init__", "__main__", "scheduler", "user", "cfgscheduler"})
TOP = max(LAYERS.values()) + 1

# (importing module, imported module): why it is allowed for now.
EXCEPTIONS: dict[tuple[str, str], str] = {
    ("supervisor.runs.forkserver", "supervisor"): (
        "reads the package's directory (supervisor.__file__) to tell the app's modules "
        "from ours; only the path, none of the facade"
    ),
    ("supervisor.cli.main", "supervisor"): "`supervisor --version` reads __version__",
    ("supervisor.core.nextruns", "supervisor.systemd.oncalendar"): (
        "next-runs previews systemd's DST rules with oncalendar.systemd_runs, a pure "
        "function (it imports only core) kept in systemd/ beside the OnCalendar= rendering "
        "it mirrors; the fix is to move systemd_runs into core.timing, after which this "
        "line fails and goes"
    ),
}

# The order inside core: a module may import core modules of its level or below.
CORE_LEVELS: dict[str, int] = {
    # errors and leaf helpers (stdlib only, or errors)
    "errors": 0,
    "clock": 0,
    "passwords": 0,
    "durations": 0,
    "sizes": 0,
    "until": 0,  # the end of a pause as people write it (durations, errors)
    "locations": 0,  # store locations (a PostgreSQL URL or not)
    "storeproblems": 0,  # what a store's error says is wrong with it
    # values
    "definitions": 1,
    "records": 1,
    "access": 1,
    "app": 1,
    # timing
    "cronexpr": 2,
    "timing": 2,
    # rules over values and timing
    "settings": 3,
    "planning": 3,
    "retries": 3,  # the retry rule (both backends)
    "registry": 3,
    "nextruns": 3,
}

# Imports inside core that issue 11 (item 6) named as wrong and that must not come back,
# whatever the levels say: values do not import the cron grammar or the registry.
FORBIDDEN_IN_CORE = frozenset(
    {
        ("supervisor.core.definitions", "supervisor.core.cronexpr"),
        ("supervisor.core.definitions", "supervisor.core.registry"),
        ("supervisor.core.definitions", "supervisor.core.settings"),
    }
)


def module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def layer(module: str) -> int | None:
    """The layer of a ``supervisor`` module; None for anything else (stdlib, libraries)."""
    parts = module.split(".")
    if parts[0] != "supervisor":
        return None
    if len(parts) == 1 or parts[1] in FACADES:
        return TOP
    return LAYERS[parts[1]]


def imports(path: Path) -> set[str]:
    """Every module ``path`` imports (``from a import b`` counts as ``a``)."""
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.add(node.module)
            # `from supervisor import scheduler` imports the module itself.
            if node.module == "supervisor":
                found.update(
                    f"supervisor.{alias.name}"
                    for alias in node.names
                    if alias.name in FACADES or alias.name in LAYERS
                )
        elif isinstance(node, ast.ImportFrom) and node.level:
            raise AssertionError(f"{path}: use absolute imports (line {node.lineno})")
    return found


def upward_imports() -> set[tuple[str, str]]:
    found = set()
    for path in sorted(PACKAGE.rglob("*.py")):
        importer = module_name(path)
        own = TOP if path.parent == PACKAGE else layer(importer)
        assert own is not None, f"{path} is in no layer: add its package to LAYERS"
        for imported in imports(path):
            level = layer(imported)
            if level is not None and level > own:
                found.add((importer, imported))
    return found


def test_every_package_has_a_layer() -> None:
    packages = {p.name for p in PACKAGE.iterdir() if (p / "__init__.py").exists()}
    # admin/ and templates/ sit inside the package only once it is installed.
    assert packages - {"admin", "templates"} == set(LAYERS) - {"admin", "templates"}
    modules = {p.stem for p in PACKAGE.glob("*.py")}
    assert modules == FACADES


def test_imports_point_down_the_layers() -> None:
    found = upward_imports()
    unexplained = sorted(found - set(EXCEPTIONS))
    assert not unexplained, "imports pointing up the layers:\n" + "\n".join(
        f"  {importer} -> {imported}" for importer, imported in unexplained
    )


def test_every_listed_exception_is_still_needed() -> None:
    stale = sorted(set(EXCEPTIONS) - upward_imports())
    assert not stale, f"no longer needed, remove from EXCEPTIONS: {stale}"


def test_the_rule_catches_an_upward_import(tmp_path: Path) -> None:
    module = tmp_path / "m.py"
    module.write_text(
        "from typing import TYPE_CHECKING\n"
        "if TYPE_CHECKING:\n"
        "    from supervisor.web.app import create_app\n"
        "def later() -> None:\n"
        "    import supervisor.manager.shell\n"
    )
    assert imports(module) == {"typing", "supervisor.web.app", "supervisor.manager.shell"}
    assert layer("supervisor.web.app") == 4 and layer("supervisor.core.timing") == 0
    assert layer("supervisor.cfgscheduler") == TOP and layer("json") is None


def core_imports() -> dict[str, set[str]]:
    """Each core module -> the core modules it imports (short names)."""
    graph: dict[str, set[str]] = {}
    for path in sorted((PACKAGE / "core").glob("*.py")):
        if path.stem == "__init__":
            continue
        graph[path.stem] = {
            name.split(".")[2]
            for name in imports(path)
            if name.startswith("supervisor.core.") and len(name.split(".")) >= 3
        }
    return graph


def upward_in_core(graph: dict[str, set[str]], levels: dict[str, int]) -> list[str]:
    return sorted(
        f"core.{importer} (level {levels[importer]}) -> core.{imported} (level {levels[imported]})"
        for importer, targets in graph.items()
        for imported in targets
        if levels[imported] > levels[importer]
        or (f"supervisor.core.{importer}", f"supervisor.core.{imported}") in FORBIDDEN_IN_CORE
    )


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Every import circle, each once (as found from its smallest module)."""
    found: list[list[str]] = []

    def walk(start: str, node: str, path: list[str]) -> None:
        for nxt in sorted(graph.get(node, ())):
            if nxt == start:
                found.append([*path, start])
            elif nxt > start and nxt not in path:
                walk(start, nxt, [*path, nxt])

    for start in sorted(graph):
        walk(start, start, [start])
    return found


def test_every_core_module_has_a_level() -> None:
    assert set(core_imports()) == set(CORE_LEVELS)


def test_core_imports_point_down_its_levels() -> None:
    wrong = upward_in_core(core_imports(), CORE_LEVELS)
    assert not wrong, "imports pointing up inside core:\n" + "\n".join(wrong)


def test_core_has_no_import_cycles() -> None:
    assert cycles(core_imports()) == []


def test_the_core_rules_catch_a_cycle_and_an_upward_import() -> None:
    # Regression: making definitions import core.registry (a cycle) passed the suite.
    graph = {name: set(targets) for name, targets in core_imports().items()}
    graph["definitions"].add("registry")
    assert ["definitions", "registry", "definitions"] in cycles(graph)
    assert any(
        "core.definitions (level 1) -> core.registry" in w
        for w in upward_in_core(graph, CORE_LEVELS)
    )
    same_level = {"app": {"records"}, "records": {"app"}}
    assert cycles(same_level) == [["app", "records", "app"]]
    graph["definitions"] = {"cronexpr"}
    assert upward_in_core(graph, CORE_LEVELS) == [
        "core.definitions (level 1) -> core.cronexpr (level 2)"
    ]
