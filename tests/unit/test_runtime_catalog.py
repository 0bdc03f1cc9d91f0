"""The runtime catalog against the places that must agree with it: the CRD's enum and
CEL rules, and the inventories' groups."""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import yaml
from criops.core.runtimes import CATALOG, CRI_NODES_GROUP, Runtime

ROOT = Path(__file__).resolve().parents[2]
CRD = yaml.safe_load((ROOT / "crds" / "runtimenode.yaml").read_text())
INVENTORIES = {path: yaml.safe_load(path.read_text()) for path in sorted(ROOT.glob("inventory/*/hosts.yml"))}


def _spec_schema(crd: dict[str, Any]) -> dict[str, Any]:
    return crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"]["properties"]["spec"]


def expected_rules(catalog: dict[str, Runtime]) -> list[str]:
    """The CEL rules on spec that follow from the catalog's runtime handlers."""
    with_handlers = ", ".join(f"'{r.name}'" for r in catalog.values() if r.has_handlers)
    rules = [f"!has(self.runtimeHandler) || self.runtime in [{with_handlers}]"]
    rules += [
        f"self.runtime != '{r.name}' || !has(self.runtimeHandler) || self.runtimeHandler == '{r.handler}'"
        for r in catalog.values()
        if r.handler_fixed
    ]
    return rules


def crd_disagreements(crd: dict[str, Any], catalog: dict[str, Runtime]) -> list[str]:
    spec = _spec_schema(crd)
    found = []
    enum = spec["properties"]["runtime"]["enum"]
    if enum != list(catalog):
        found.append(f"spec.runtime enum {enum} != catalog {list(catalog)}")
    rules = [rule["rule"] for rule in spec.get("x-kubernetes-validations", [])]
    found += [f"missing CEL rule: {rule}" for rule in expected_rules(catalog) if rule not in rules]
    return found


def _children(group: dict[str, Any] | None) -> dict[str, Any]:
    return (group or {}).get("children") or {}


def _find(tree: dict[str, Any], name: str) -> dict[str, Any] | None:
    """The group `name` anywhere under `tree` (an inventory's children mapping)."""
    for child, body in tree.items():
        if child == name:
            return body or {}
        found = _find(_children(body), name)
        if found is not None:
            return found
    return None


def inventory_disagreements(inventory: dict[str, Any], catalog: dict[str, Runtime]) -> list[str]:
    """Every runtime group must sit under cri_nodes, and under its parent group when it has one."""
    cri_nodes = _find(_children(inventory.get("all")), CRI_NODES_GROUP)
    if cri_nodes is None:
        return [f"no group {CRI_NODES_GROUP}"]
    found = []
    for runtime in catalog.values():
        parent = _find(_children(cri_nodes), runtime.parent_group) if runtime.parent_group else cri_nodes
        if parent is None:
            found.append(f"{runtime.name}: parent group {runtime.parent_group} not under {CRI_NODES_GROUP}")
        elif runtime.group not in _children(parent):
            where = runtime.parent_group or CRI_NODES_GROUP
            found.append(f"{runtime.name}: group {runtime.group} is not a child of {where}")
    return found


def test_the_crd_follows_the_catalog():
    assert crd_disagreements(CRD, CATALOG) == []


def test_every_inventory_follows_the_catalog():
    assert len(INVENTORIES) >= 2
    for path, inventory in INVENTORIES.items():
        assert inventory_disagreements(inventory, CATALOG) == [], path


def test_a_runtime_added_only_to_the_catalog_is_caught():
    runtime = Runtime("cri-o", "unix:///run/crio/crio.sock", "v1", "crio", handler="crun", handler_fixed=True)
    grown = {**CATALOG, runtime.name: runtime}
    assert crd_disagreements(CRD, grown) == [
        f"spec.runtime enum {list(CATALOG)} != catalog {list(grown)}",
        f"missing CEL rule: {expected_rules(grown)[0]}",
        f"missing CEL rule: {expected_rules(grown)[-1]}",
    ]
    sample = INVENTORIES[ROOT / "inventory" / "sample" / "hosts.yml"]
    assert inventory_disagreements(sample, grown) == [f"cri-o: group crio is not a child of {CRI_NODES_GROUP}"]


def test_a_crd_that_drops_a_runtime_is_caught():
    crd = copy.deepcopy(CRD)
    _spec_schema(crd)["properties"]["runtime"]["enum"].remove("virtlet")
    assert crd_disagreements(crd, CATALOG)


def test_every_runtime_names_roles_that_exist():
    for runtime in CATALOG.values():
        for role in runtime.all_roles:
            assert (ROOT / "roles" / role / "meta" / "argument_specs.yml").is_file(), (runtime.name, role)
