"""The imports of every module under ``supervisor/`` point down the layers (README).

Bottom to top: ``core`` < ``runs``, ``store``, ``notify`` < ``manager``, ``systemd``,
``metrics`` < ``usecases`` <
``web``, ``cli``, ``service`` < the public facades (``supervisor/__init__.py``,
``scheduler``, ``user``, ``cfgscheduler``, ``__main__``). Packages on one level may import
each other. Every import counts: at module level, inside functions, and under
``TYPE_CHECKING``. The few known exceptions are listed with their reason; one that is no
longer needed fails too, so the list only shrinks.
"""

from __future__ import annotations

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parent.parent / "supervisor"

LAYERS: dict[str, int] = {
    "core": 0,
    "runs": 1,
    "store": 1,
    "notify": 1,
    "manager": 2,
    "metrics": 2,
    "systemd": 2,
    "usecases": 3,
    "web": 4,
    "cli": 4,
    "service": 4,
}
FACADES = frozenset({"__init__", "__main__", "scheduler", "user", "cfgscheduler"})
TOP = max(LAYERS.values()) + 1

# (importing module, imported module): why it is allowed for now.
EXCEPTIONS: dict[tuple[str, str], str] = {
    ("supervisor.runs.child", "supervisor.cfgscheduler"): (
        "a run's process finds its scheduler through the app's extension; the launcher "
        "rework moves it to core.registry.registry_of (issue 11, item 4)"
    ),
    ("supervisor.runs.forkserver", "supervisor.cfgscheduler"): (
        "as runs.child: the fork server loads the app's definitions (issue 11, item 4)"
    ),
    ("supervisor.runs.forkserver", "supervisor"): (
        "reads the package's directory (supervisor.__file__) to tell the app's modules "
        "from ours; only the path, none of the facade"
    ),
    ("supervisor.cli.main", "supervisor"): "`supervisor --version` reads __version__",
    ("supervisor.core.nextruns", "supervisor.systemd.oncalendar"): (
        "next-runs previews systemd's DST rules; it belongs above systemd (with the CLI "
        "and the Admin Center that call it), not in core"
    ),
}


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
    assert packages == set(LAYERS)
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
