"""reset.yml's guard: which pod sandboxes a runtime still runs, by name (roles/cri_tools)."""

from __future__ import annotations

import json

from testworld.filter_plugins import cri_pods


def _pod(name: str, namespace: str, state: str, handler: str | None = None) -> dict:
    pod = {"id": f"id-{name}", "metadata": {"name": name, "namespace": namespace, "uid": "u"}, "state": state}
    if handler is not None:
        pod["runtimeHandler"] = handler
    return pod


def test_ready_sandboxes_are_named_with_their_handler_and_not_ready_ones_are_not() -> None:
    listing = {
        "items": [
            _pod("web", "shop", "SANDBOX_READY", "crun"),
            _pod("gone", "shop", "SANDBOX_NOTREADY", "crun"),
            _pod("db", "bank", "SANDBOX_READY", ""),
        ]
    }
    assert cri_pods.cri_running_pods(json.dumps(listing)) == ["bank/db (handler default)", "shop/web (handler crun)"]


def test_crictl_v1_13_reports_no_handler() -> None:
    listing = {"items": [_pod("vm", "default", "SANDBOX_READY")]}
    assert cri_pods.cri_running_pods(json.dumps(listing)) == ["default/vm (handler default)"]


def test_no_pods_at_all() -> None:
    assert cri_pods.cri_running_pods('{"items": []}') == []
    assert cri_pods.cri_running_pods("{}") == []
    assert cri_pods.cri_running_pods("") == []


def test_hostile_names_stay_text() -> None:
    name = "{{ lookup('pipe', 'id') }}; $(reboot)"
    listing = {"items": [_pod(name, "ns", "SANDBOX_READY", "runc")]}
    assert cri_pods.cri_running_pods(json.dumps(listing)) == [f"ns/{name} (handler runc)"]
