"""The import rule of plugins/module_utils (docs/dev/architecture.md): a file's layer is its subpackage
(``util`` -> ``format`` -> ``store`` -> ``components`` -> ``ops`` -> ``edge``), imports only go down the
layers (or stay inside one), and no component's code (``components/<name>/``) imports another component's."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

MODULE_UTILS = Path(__file__).resolve().parents[4] / "plugins" / "module_utils"
PREFIX = "ansible_collections.lifeboat.dr.plugins.module_utils"
LAYERS = ["util", "format", "store", "components", "ops", "edge"]
RANK = {layer: rank for rank, layer in enumerate(LAYERS)}


def dotted(path: Path, root: Path = MODULE_UTILS) -> str:
    """``components/mysql/backup.py`` -> ``components.mysql.backup`` (a package's ``__init__`` is the package)."""
    parts = path.relative_to(root).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def layer_of(module: str) -> str:
    """The layer of a module_utils module given as a dotted path below module_utils: its first package."""
    return module.split(".")[0]


def component_of(module: str) -> str | None:
    """``components.mysql.pitr`` -> ``mysql``; None outside ``components/<name>/`` (e.g. ``components.base``)."""
    parts = module.split(".")
    return parts[1] if parts[0] == "components" and len(parts) > 2 else None


def imported_modules(path: Path, root: Path = MODULE_UTILS) -> list[tuple[str, int]]:
    """The module_utils modules ``path`` imports (at any depth of the file), as dotted paths below
    module_utils, with line numbers. ``from PREFIX.pkg import mod`` counts as ``pkg.mod`` when
    ``pkg/mod.py`` (or the package ``pkg/mod/``) exists, else as ``pkg``."""
    found = []
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith(PREFIX):
            rest = node.module[len(PREFIX):].lstrip(".")
            for alias in node.names:
                candidate = f"{rest}.{alias.name}" if rest else alias.name
                as_path = root.joinpath(*candidate.split("."))
                module = candidate if as_path.with_suffix(".py").exists() or as_path.is_dir() else rest
                found.append((module, node.lineno))
        elif isinstance(node, ast.Import):
            found += [(alias.name[len(PREFIX) + 1:], node.lineno) for alias in node.names
                      if alias.name.startswith(PREFIX + ".")]
    return found


SOURCES = sorted(MODULE_UTILS.rglob("*.py"))


def upward_imports(path: Path, root: Path = MODULE_UTILS) -> list[str]:
    """Each import of ``path`` that goes up the layers, described."""
    mine = dotted(path, root)
    return [f"{mine} ({layer_of(mine)}) imports {name} ({layer_of(name)}) on line {line}"
            for name, line in imported_modules(path, root)
            if RANK.get(layer_of(name), -1) > RANK[layer_of(mine)]]


def crossing_imports(path: Path, root: Path = MODULE_UTILS) -> list[str]:
    """Each import of ``path`` (a component's file) of another component's file, described."""
    mine = dotted(path, root)
    return [f"{mine} ({component_of(mine)}) imports {name} ({component_of(name)}) on line {line}"
            for name, line in imported_modules(path, root)
            if component_of(name) and component_of(name) != component_of(mine)]


def test_every_module_utils_file_is_in_a_layer_package():
    unplaced = [str(p.relative_to(MODULE_UTILS)) for p in SOURCES
                if len(p.relative_to(MODULE_UTILS).parts) < 2 or layer_of(dotted(p)) not in RANK]
    assert not unplaced, f"move {unplaced} into one of {LAYERS} (and docs/dev/architecture.md)"


def test_every_package_has_an_empty_init():
    """ansible-core's module packager needs a real ``__init__.py`` in each subpackage; ansible-test's
    empty-init check wants them empty."""
    packages = {p.parent for p in SOURCES} - {MODULE_UTILS}
    missing = [str(d.relative_to(MODULE_UTILS)) for d in packages if not (d / "__init__.py").is_file()]
    assert not missing
    assert not [str(d) for d in packages if (d / "__init__.py").read_text().strip()]


@pytest.mark.parametrize("path", [p for p in SOURCES if p.stem != "__init__"], ids=dotted)
def test_imports_only_go_down(path):
    assert not upward_imports(path)


@pytest.mark.parametrize("path", [p for p in SOURCES if component_of(dotted(p))], ids=dotted)
def test_a_component_never_imports_another(path):
    assert not crossing_imports(path)


def test_the_rule_catches_an_upward_import(tmp_path):
    """The checker itself: a store-layer file importing an ops module (either import form) is reported."""
    fake = tmp_path / "module_utils"
    (fake / "store").mkdir(parents=True)
    (fake / "ops").mkdir()
    (fake / "ops" / "health.py").write_text("")
    bad = fake / "store" / "backupset.py"
    bad.write_text(f"def f():\n    from {PREFIX}.ops import health\n    from {PREFIX}.ops.health import x\n")
    assert upward_imports(bad, fake) == ["store.backupset (store) imports ops.health (ops) on line 2",
                                         "store.backupset (store) imports ops.health (ops) on line 3"]


def test_the_rule_catches_one_component_importing_another(tmp_path):
    """A component's file importing another component's file is reported; importing components.base is not."""
    fake = tmp_path / "module_utils"
    (fake / "components" / "redis").mkdir(parents=True)
    (fake / "components" / "mysql").mkdir()
    (fake / "components" / "mysql" / "conn.py").write_text("")
    (fake / "components" / "base.py").write_text("")
    bad = fake / "components" / "redis" / "engine.py"
    bad.write_text(f"from {PREFIX}.components.mysql import conn\nfrom {PREFIX}.components import base\n")
    assert crossing_imports(bad, fake) == [
        "components.redis.engine (redis) imports components.mysql.conn (mysql) on line 1"]
