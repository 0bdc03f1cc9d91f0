"""Name the pod sandboxes a CRI runtime still runs, from `crictl pods --output json`.

reset.yml refuses to remove a runtime while pods run on it and names them as a
user knows them: namespace/name, and the runtime handler (RuntimeClass) they
run under. Names are data: they are only ever joined into the message.
"""

from __future__ import annotations

import json
from typing import Any


def cri_running_pods(crictl_json: str) -> list[str]:
    """ "<namespace>/<name> (handler <h>)" for every ready sandbox, sorted.

    crictl v1.37 reports `runtimeHandler`; v1.13 (CRI v1alpha2) does not, and an
    empty handler is the runtime's default.
    """
    items: list[dict[str, Any]] = (json.loads(crictl_json or "{}") or {}).get("items") or []
    running = []
    for pod in items:
        if pod.get("state") not in ("SANDBOX_READY", 0):
            continue
        metadata = pod.get("metadata") or {}
        handler = pod.get("runtimeHandler") or "default"
        name = metadata.get("name", pod.get("id", "?"))
        running.append(f"{metadata.get('namespace', '')}/{name} (handler {handler})")
    return sorted(running)


class FilterModule:
    def filters(self) -> dict[str, Any]:
        return {"cri_running_pods": cri_running_pods}
