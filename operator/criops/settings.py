"""The operator's tunables, in one place, read from the environment once."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path


def _int(name: str, default: int, minimum: int = 1) -> int:
    raw = os.environ.get(name, "")
    try:
        value = int(raw) if raw else default
    except ValueError:
        raise SystemExit(f"{name} must be an integer, got {raw!r}") from None
    if value < minimum:
        raise SystemExit(f"{name} must be >= {minimum}, got {value}")
    return value


@dataclass(frozen=True)
class Settings:
    # The criops checkout the image carries: playbooks/, roles/, ansible.cfg.
    project_dir: Path
    # Inventory group_vars every run gets (site-wide mirrors, versions, sources).
    group_vars_dir: Path | None
    # Per-run directories (inventory, reports, ansible-runner artifacts).
    state_dir: Path
    # The namespace the operator runs in: SSH key Secrets are read only there.
    namespace: str
    # Playbook runs at once, across all RuntimeNodes.
    concurrency: int
    # RuntimeNodes whose events kopf handles at once.
    worker_limit: int
    # Threads for Kubernetes API calls.
    api_threads: int
    # Connections kopf keeps to the API server (watches and patches).
    api_connections: int
    # How often the probe loop wakes up to see whose interval is due (seconds).
    probe_tick: int
    # Runs kept per RuntimeNode for inspection.
    runs_kept: int
    # Failure names kept in status.critest.failures.
    failures_listed: int
    # Seconds before a RuntimeNode waiting for something (Secret, drained Node) is looked at again.
    retry_delay: int
    # Seconds a site.yml run may take.
    provision_timeout: int
    # connection: pod — the namespace of the on-node pods (privileged), their image
    # ("": the operator's own, read from its Pod), this operator's Pod name, and
    # seconds an on-node pod may take to start (image pull included).
    node_namespace: str = "criops-nodes"
    node_image: str = ""
    pod_name: str = ""
    pod_start_timeout: int = 600

    @classmethod
    def from_env(cls) -> Settings:
        default_project = Path(__file__).resolve().parents[2]
        group_vars = os.environ.get("CRIOPS_GROUP_VARS", "")
        return cls(
            project_dir=Path(os.environ.get("CRIOPS_PROJECT_DIR", default_project)),
            group_vars_dir=Path(group_vars) if group_vars else None,
            state_dir=Path(os.environ.get("CRIOPS_STATE_DIR", "/var/lib/criops-operator")),
            namespace=os.environ.get("CRIOPS_NAMESPACE", "criops-system"),
            concurrency=_int("CRIOPS_CONCURRENCY", 2),
            worker_limit=_int("CRIOPS_WORKER_LIMIT", 1000),
            api_threads=_int("CRIOPS_API_THREADS", 16),
            api_connections=_int("CRIOPS_API_CONNECTIONS", 16),
            probe_tick=_int("CRIOPS_PROBE_TICK", 15),
            runs_kept=_int("CRIOPS_RUNS_KEPT", 5),
            failures_listed=_int("CRIOPS_FAILURES_LISTED", 20),
            retry_delay=_int("CRIOPS_RETRY_DELAY", 60),
            provision_timeout=_int("CRIOPS_PROVISION_TIMEOUT", 3600, minimum=60),
            node_namespace=os.environ.get("CRIOPS_NODE_NAMESPACE", "criops-nodes"),
            node_image=os.environ.get("CRIOPS_NODE_IMAGE", ""),
            pod_name=os.environ.get("CRIOPS_POD_NAME", ""),
            pod_start_timeout=_int("CRIOPS_POD_START_TIMEOUT", 600, minimum=10),
        )
