"""The runtime catalog: every fact criops keeps about a container runtime, in one table.

The operator reads it (spec defaults and checks, inventory groups, the
RuntimeClass, the checks a containerd runtime handler must pass, which roles'
variables spec.provision.extraVars may set); tests/unit/test_runtime_catalog.py
holds the CRD's enum and CEL rules and the inventories' groups to it. Adding a
runtime is a row here, its role, and its inventory group.

"Handler" here is always a containerd runtime handler (a RuntimeClass's
`handler`), never a kopf or an Ansible handler.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

# The inventory group every CRI node is in: roles every node needs run on it.
CRI_NODES_GROUP = "cri_nodes"
# Roles site.yml runs on every CRI node, whatever its runtime.
SHARED_ROLES = ("node_prereqs", "cni_plugins", "cri_tools")
CONTAINERD_SOCKET = "unix:///run/containerd/containerd.sock"
ValidationInstance = Literal["live", "throwaway"]


@dataclass(frozen=True)
class RuntimeClassSpec:
    """The RuntimeClass criops applies for a runtime that is a containerd handler of its own."""

    handler: str
    # Fixed per-pod overhead (RuntimeClass overhead.podFixed); none for a handler
    # that runs pods as host processes like runc does (an empty overhead is left out).
    overhead: dict[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class Runtime:
    name: str
    # The CRI socket, unless spec.criEndpoint says otherwise.
    endpoint: str
    # The CRI API the endpoint speaks; v1alpha2 runtimes cannot serve a kubelet >= 1.26.
    cri_api: Literal["v1", "v1alpha2"]
    # The inventory group that provisions it (a child of CRI_NODES_GROUP, or of `parent_group`).
    group: str
    # The group `group` is a child of, besides CRI_NODES_GROUP ("" for none).
    parent_group: str = ""
    # The containerd runtime handler validated by default ("" when the runtime has none).
    handler: str = ""
    # True when spec.runtimeHandler may name only `handler`.
    handler_fixed: bool = False
    # Commands (argv lists on the node) the handler must pass before its smoke pod.
    handler_checks: tuple[tuple[str, ...], ...] = ()
    runtime_class: RuntimeClassSpec | None = None
    # Roles site.yml runs for this runtime on top of SHARED_ROLES, in order.
    roles: tuple[str, ...] = field(default=())
    # For CRI v1alpha2 runtimes: what users run instead under a kubelet >= 1.26.
    instead: str = ""
    # True when the runtime leaves a stopped pod's containers running, relying on
    # the kubelet to stop them first: validation does that duty while critest runs.
    leaves_containers_of_stopped_pods: bool = False
    # True when its CRI server is the node's containerd: smoke pods and critest
    # can then run on a throwaway containerd started beside it from its config
    # (cri_validate_instance: throwaway), so a live Node need not be drained.
    throwaway_instance: bool = False

    @property
    def has_handlers(self) -> bool:
        return bool(self.handler)

    @property
    def all_roles(self) -> tuple[str, ...]:
        """Every role site.yml runs for a node of this runtime (whose variables extraVars may set)."""
        return (*SHARED_ROLES, *self.roles)


_CONTAINERD = ("containerd",)

CATALOG: dict[str, Runtime] = {
    runtime.name: runtime
    for runtime in (
        Runtime(
            "containerd",
            CONTAINERD_SOCKET,
            "v1",
            "containerd",
            handler="runc",
            roles=_CONTAINERD,
            throwaway_instance=True,
        ),
        # runc is the handler of pods without a RuntimeClass (the cluster's default): it needs none.
        Runtime(
            "crun",
            CONTAINERD_SOCKET,
            "v1",
            "containerd",
            handler="crun",
            runtime_class=RuntimeClassSpec("crun"),
            roles=_CONTAINERD,
            throwaway_instance=True,
        ),
        # Kata nodes are containerd nodes too: the kata group is a child of containerd.
        Runtime(
            "kata",
            CONTAINERD_SOCKET,
            "v1",
            "kata",
            parent_group="containerd",
            handler="kata",
            handler_fixed=True,
            handler_checks=(("/opt/kata/bin/kata-runtime", "check", "--no-network-checks"),),
            # Kata's VM: the guest kernel, agent and hypervisor, as kata-deploy accounts them.
            runtime_class=RuntimeClassSpec("kata", {"cpu": "250m", "memory": "160Mi"}),
            roles=(*_CONTAINERD, "kata"),
            throwaway_instance=True,
        ),
        # Archived runtimes that only ever spoke CRI v1alpha2 (dropped by kubelet 1.26).
        Runtime(
            "virtlet",
            "unix:///run/virtlet.sock",
            "v1alpha2",
            "virtlet",
            roles=("libvirt", "virtlet"),
            instead="KubeVirt for VMs as pods, or runtime kata for pods in their own VM",
            leaves_containers_of_stopped_pods=True,
        ),
        Runtime(
            "singularity-cri",
            "unix:///var/run/singularity.sock",
            "v1alpha2",
            "singularity_cri",
            roles=("singularity_cri",),
            instead="runtime containerd or crun with the image as OCI (Apptainer converts SIF to OCI)",
        ),
    )
}


def validation_instance(runtime: str, endpoint: str) -> ValidationInstance:
    """Where smoke pods and critest run: a throwaway containerd beside the node's, or the node's
    CRI server itself. The throwaway instance is built from the node's containerd config, so
    only the containerd at the catalog's socket qualifies; an endpoint a spec names elsewhere
    may be another daemon with another config."""
    facts = CATALOG[runtime]
    return "throwaway" if facts.throwaway_instance and endpoint == facts.endpoint else "live"
