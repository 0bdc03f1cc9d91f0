"""The runtime catalog against the places that must agree with it: the CRD's enum and
CEL rules, the inventories' groups, and the roles site.yml runs on each group."""

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
    cri_v1 = ", ".join(f"'{r.name}'" for r in catalog.values() if r.cri_api == "v1")
    rules.append(
        f"self.runtime in [{cri_v1}] || !has(self.validation) || "
        "((!has(self.validation.parallel) || self.validation.parallel == 1) && !has(self.validation.testImages))"
    )
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
        f"missing CEL rule: {expected_rules(grown)[-2]}",
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


def _play_roles(play: dict[str, Any]) -> set[str]:
    """The roles a play runs: its roles list and the roles its tasks include or import."""
    roles = {r if isinstance(r, str) else r.get("role", r.get("name")) for r in play.get("roles") or []}
    for task in play.get("tasks") or []:
        for module in ("ansible.builtin.include_role", "ansible.builtin.import_role"):
            if module in task:
                roles.add(task[module]["name"])
    return roles


def site_disagreements(site: list[dict[str, Any]], catalog: dict[str, Runtime]) -> list[str]:
    """site.yml must run, for each runtime, every role of its row on the runtime's group or a
    group above it (the shared roles on cri_nodes), and on a runtime's group nothing else:
    spec.provision.extraVars is checked against exactly those roles' variables."""
    # The roles site.yml installs with, by group (its first play only checks inputs).
    provisioning = [play for play in site if "Check nodes" not in play["name"]]
    by_group: dict[str, set[str]] = {}
    for play in provisioning:
        by_group.setdefault(play["hosts"], set()).update(_play_roles(play))
    found = []
    for runtime in catalog.values():
        groups = [CRI_NODES_GROUP, runtime.parent_group, runtime.group]
        reached = set().union(*(by_group.get(group, set()) for group in groups if group))
        found += [
            f"{runtime.name}: site.yml runs no {role} for it" for role in runtime.all_roles if role not in reached
        ]
        found += [
            f"{runtime.name}: site.yml runs {role} on {runtime.group}, not in the catalog's roles"
            for role in sorted(by_group.get(runtime.group, set()) - set(runtime.all_roles))
        ]
    return found


SITE = yaml.safe_load((ROOT / "playbooks" / "site.yml").read_text())


def test_site_yml_runs_the_catalogs_roles_on_the_catalogs_groups():
    assert site_disagreements(SITE, CATALOG) == []


def test_a_role_the_catalog_does_not_list_is_caught():
    site = copy.deepcopy(SITE)
    site.append({"name": "Provision virtlet nodes", "hosts": "virtlet", "roles": ["kata"]})
    assert site_disagreements(site, CATALOG) == ["virtlet: site.yml runs kata on virtlet, not in the catalog's roles"]
    missing = {**CATALOG, "kata": Runtime("kata", "unix:///k.sock", "v1", "kata", "containerd", roles=("kata", "x"))}
    assert site_disagreements(SITE, missing) == ["kata: site.yml runs no x for it"]
