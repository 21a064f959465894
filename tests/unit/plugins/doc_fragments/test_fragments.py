"""Each doc fragment documents exactly the option layer of the same name in common.py."""

from __future__ import annotations

import importlib

import pytest
import yaml

from ansible_collections.lifeboat.dr.plugins.module_utils.edge import common

LAYERS = {
    "store": common.store_argument_spec,
    "mysql": common.mysql_argument_spec,
    "redis": common.redis_argument_spec,
    "vault": common.vault_argument_spec,
}
COMPARED = ("type", "required", "default", "choices", "aliases", "elements")


def fragment_options(name):
    module = importlib.import_module(f"ansible_collections.lifeboat.dr.plugins.doc_fragments.{name}")
    return yaml.safe_load(module.ModuleDocFragment.DOCUMENTATION)["options"]


@pytest.mark.parametrize("name", sorted(LAYERS))
def test_fragment_documents_the_same_options_as_the_layer(name):
    spec = LAYERS[name]()
    documented = fragment_options(name)
    assert sorted(documented) == sorted(spec)
    for option, opt_spec in spec.items():
        doc = documented[option]
        assert doc.get("description"), f"{name}.{option} has no description"
        for field in COMPARED:
            expected = opt_spec.get(field, False if field == "required" else None)
            assert doc.get(field, False if field == "required" else None) == expected, (
                f"{name}.{option}: fragment says {field}={doc.get(field)!r}, spec says {expected!r}")
