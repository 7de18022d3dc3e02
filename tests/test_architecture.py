"""DESIGN.md's dependency direction, read from the source with ``ast``.

``training -> envs -> l2_tactical``; ``l1_operational -> l2_tactical.{messages, execution}``
(plus the foundation modules config, errors, clock). ``l2_tactical`` and ``envs`` never import
``training``. Heavy or I/O libraries are imported at module top level only by the adapter or
loader module that needs them (inside functions anywhere is fine: that is lazy loading).
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
HEAVY = {
    "torch",
    "stable_baselines3",
    "redis",
    "binance",
    "sqlalchemy",
    "ray",
    "plotly",
    "aiohttp",
    "finrl",
    "tensorboard",
    "psycopg2",
}
# adapters/loaders allowed to import a heavy library at module top level
HEAVY_ALLOWED = {
    "l2_tactical/bus/redis_streams.py": {"redis"},
    "l2_tactical/backtest/report.py": {"plotly"},
    "envs/vec_env.py": {"stable_baselines3"},
    "l1_operational/journal.py": {"sqlalchemy"},
    "l1_operational/binance_replay_server.py": {"aiohttp"},
    "l1_operational/datafeed.py": {"binance", "aiohttp"},
}
L1_MAY_IMPORT = {
    "l2_tactical.messages",
    "l2_tactical.execution",
    "l2_tactical.config",
    "l2_tactical.errors",
    "l2_tactical.clock",
    "l2_tactical.bus",
    "l2_tactical.data.candles",
    "l2_tactical.data.bar",
}


def _modules(package: str) -> list[Path]:
    return sorted((ROOT / package).rglob("*.py"))


def _imports(path: Path) -> list[tuple[str, bool]]:
    """(module, at_top_level) for every import in the file."""
    tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    top = {id(node) for node in tree.body}
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found += [(alias.name, id(node) in top) for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.append((node.module, id(node) in top))
    return found


def _rel(path: Path) -> str:
    return path.relative_to(ROOT).as_posix()


@pytest.mark.parametrize(
    "package,forbidden",
    [
        ("l2_tactical", ("training", "envs", "l1_operational")),
        ("envs", ("training", "l1_operational")),
    ],
)
def test_core_packages_never_import_against_the_arrows(package, forbidden):
    bad = [
        f"{_rel(p)} imports {mod}"
        for p in _modules(package)
        for mod, _ in _imports(p)
        if mod.split(".")[0] in forbidden
    ]
    assert not bad, "\n".join(bad)


def test_l1_only_talks_to_l2_through_messages_and_execution():
    bad = [
        f"{_rel(p)} imports {mod}"
        for p in _modules("l1_operational")
        for mod, _ in _imports(p)
        if mod.startswith("l2_tactical") and not any(mod == ok or mod.startswith(ok + ".") for ok in L1_MAY_IMPORT)
    ]
    assert not bad, "\n".join(bad)


def test_heavy_libraries_are_imported_only_where_they_are_needed():
    bad = []
    for package in ("l2_tactical", "envs", "l1_operational"):
        for path in _modules(package):
            allowed = HEAVY_ALLOWED.get(_rel(path), set())
            for mod, at_top in _imports(path):
                root = mod.split(".")[0]
                if at_top and root in HEAVY and root not in allowed:
                    bad.append(f"{_rel(path)} imports {mod} at module top level")
    assert not bad, "\n".join(bad)


def test_the_rule_checker_sees_a_violation(tmp_path):
    """Guard against a checker that can pass vacuously."""
    src = tmp_path / "x.py"
    src.write_text("import torch\nfrom training.shared import x\n\ndef f():\n    import redis\n")
    assert _imports(src) == [("torch", True), ("training.shared", True), ("redis", False)]
