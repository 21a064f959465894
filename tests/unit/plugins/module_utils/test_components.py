"""The component-engine registry and the operations built once on it (components/base.py).

Real engines, real store, real files: the ``app`` engine needs no server, so the generic
backup / open / verify paths and the verification error policy run here end to end.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from ansible_collections.lifeboat.dr.plugins.module_utils.components import base as components
from ansible_collections.lifeboat.dr.plugins.module_utils.format.keys import FileKEK, KeyRing, create_key_file
from ansible_collections.lifeboat.dr.plugins.module_utils.ops.set_verify import restore_method, verify_set
from ansible_collections.lifeboat.dr.plugins.module_utils.store.catalog import Store
from ansible_collections.lifeboat.dr.plugins.module_utils.util.errors import ConfigError, KeyProblem, NotFound


def _ring(path: Path) -> KeyRing:
    create_key_file(path)
    return KeyRing(FileKEK.load(path))


@pytest.fixture
def files_set(tmp_path: Path) -> tuple[Store, KeyRing, str]:
    """A published one-component ``app`` set of a small folder, made through components.run_backup."""
    src = tmp_path / "src"
    (src / "sub").mkdir(parents=True)
    (src / "a.txt").write_bytes(b"alpha\n" * 1000)
    (src / "sub" / "b.bin").write_bytes(bytes(range(256)) * 64)
    ring = _ring(tmp_path / "kek.key")
    result = components.run_backup("app", tmp_path / "store", ring, {"storage": str(src)})
    return Store(tmp_path / "store"), ring, result["set_id"]


def test_every_component_has_one_engine_implementing_the_interface():
    assert set(components.components()) == {"mysql", "redis", "vault", "app", "compose"}
    for name in components.components():
        engine = components.get_engine(name)
        assert isinstance(engine, components.ComponentEngine), name
        assert engine.name == name
        assert engine.backup_module.startswith("lifeboat.dr.") and engine.backup_module.endswith("_backup")
        assert restore_method(name) == engine.restore_method and engine.restore_method


def test_an_unknown_component_is_a_config_error_naming_the_known_ones():
    with pytest.raises(ConfigError) as err:
        components.get_engine("postgres")
    assert "postgres" in err.value.message and "mysql, redis, vault, app" in err.value.hint


@pytest.mark.parametrize("component", ["mysql", "redis", "vault", "app", "compose"])
def test_open_set_in_an_empty_store_names_the_backup_module_to_run(tmp_path, component):
    with pytest.raises(NotFound) as err:
        components.open_set(Store(tmp_path / "store"), component, "latest")
    assert f"lifeboat.dr.{'files' if component == 'app' else component}_backup" in err.value.hint


def test_run_backup_publishes_a_set_that_open_set_finds_as_latest(files_set):
    store, _ring_, set_id = files_set
    found = components.open_set(store, "app", None)
    assert found.set_id == set_id and found.components == ["app"]
    assert components.open_set(store, "app", set_id).set_id == set_id


def test_run_backup_reports_the_manifest_totals(tmp_path):
    src = tmp_path / "src"
    src.mkdir()
    (src / "f").write_bytes(b"x" * 5000)
    result = components.run_backup("app", tmp_path / "store", _ring(tmp_path / "k"), {"storage": str(src)})
    manifest_totals = Store(tmp_path / "store").open_set(result["set_id"]).manifest["totals"]
    assert result["stored_bytes"] == manifest_totals["stored_bytes"] > 0
    assert result["plaintext_bytes"] == manifest_totals["plaintext_bytes"] >= 5000


def test_verify_set_dispatches_to_the_component_engine(files_set):
    store, ring, set_id = files_set
    report = verify_set(str(store.root), set_id, ring, mode="full", record=False)
    assert report["ok"], report["failed"]
    engine_checks = [c for c in report["checks"] if c["name"] == "app folder storage"]
    assert len(engine_checks) == 1 and engine_checks[0]["artifact"] == "app/storage"
    assert report["restore_methods"] == {"app": components.get_engine("app").restore_method}


def test_a_component_without_an_engine_has_no_engine_checks(files_set):
    store, ring, set_id = files_set
    assert components.verify_component(store, store.open_set(set_id), ring, "postgres", "full", {}) == []


def test_damaged_data_is_a_failed_check_not_an_exception(files_set):
    store, ring, set_id = files_set
    backup_set = store.open_set(set_id)
    artifact = next(p for p in (backup_set.path / "app").iterdir() if p.name.endswith(".enc"))
    data = bytearray(artifact.read_bytes())
    data[len(data) // 2] ^= 0xFF
    artifact.write_bytes(bytes(data))
    checks = components.verify_component(store, backup_set, ring, "app", "full", {})
    assert checks and not all(c["ok"] for c in checks)
    assert any(c["artifact"] and c["artifact"].startswith("app") for c in checks if not c["ok"])


def test_a_key_that_cannot_open_the_set_is_raised_not_recorded(files_set, tmp_path):
    store, _ring_, set_id = files_set
    other = _ring(tmp_path / "other.key")
    with pytest.raises(KeyProblem):
        components.verify_component(store, store.open_set(set_id), other, "app", "full", {})


def test_set_verify_imports_every_engine_statically_so_ansible_ships_them():
    """AnsiballZ packs only the module_utils a module imports by name; a registry lookup by string is not seen."""
    import ast

    from ansible_collections.lifeboat.dr.plugins.module_utils.ops import set_verify

    tree = ast.parse(Path(set_verify.__file__).read_text())
    imported = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.module:
            imported.add(node.module)
            imported.update(f"{node.module}.{alias.name}" for alias in node.names)
    assert set(components.ENGINE_MODULES.values()) <= imported
