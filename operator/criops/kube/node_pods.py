"""`connection: pod`: one playbook run as a pod on the node (criops.node_pod builds it,
criops.onnode runs in it), from the playbook pool's worker thread.

The pod is created in the node pods' namespace (Settings.node_namespace, the
only one the operator may create pods in), watched until it ends, its log read
(the last line is the run's result and reports) and kept in the run directory,
and the pod deleted: after the result is read, on failure, on timeout, when the
run is cancelled. Leftovers of the same RuntimeNode and playbook (an operator
killed mid-run) are deleted before a new one starts; the RuntimeNode owns each
pod, so deleting it takes them too.
"""

from __future__ import annotations

import json
import logging
import secrets
import threading
import time
from functools import cache
from pathlib import Path
from typing import Any

import urllib3
from kubernetes.client.exceptions import ApiException

from .. import contract, node_pod
from ..settings import Settings
from .client import get, permanent, quoted, request, runtime_nodes_path, server_message

log = logging.getLogger(__name__)

POLL_SECONDS = 2.0
# One environment variable holds at most 128 KiB (MAX_ARG_STRLEN) with its name.
RUN_DOCUMENT_LIMIT = 128 * 1024 - len(contract.ONNODE_RUN_ENV) - 2


class NodePodError(RuntimeError):
    """The on-node pod could not be made to run: the message says why, in the API server's
    or the kubelet's words."""


@cache
def _own_image(namespace: str, pod: str) -> str:
    """The image this operator runs from, by digest when the node reports one: the on-node
    pod then runs the very same criops."""
    found = _read(namespace, pod)
    statuses = (found.get("status") or {}).get("containerStatuses") or []
    image_id = statuses[0].get("imageID", "") if statuses else ""
    return image_id if "@" in image_id else found["spec"]["containers"][0]["image"]


def image(settings: Settings) -> str:
    """CRIOPS_NODE_IMAGE, else the operator's own image (read from its own Pod)."""
    if settings.node_image:
        return settings.node_image
    if not settings.pod_name:
        raise NodePodError("no image for on-node pods: set CRIOPS_NODE_IMAGE (the operator runs outside a pod)")
    return _own_image(settings.namespace, settings.pod_name)


def _owner(name: str) -> dict[str, str]:
    found = get(runtime_nodes_path(name))
    return {"name": name, "uid": found["metadata"]["uid"]}


def _delete(namespace: str, name: str) -> None:
    try:
        request(
            "DELETE",
            _pods_path(namespace, name),
            query=[("gracePeriodSeconds", 5), ("propagationPolicy", "Background")],
        )
    except ApiException as error:
        if error.status != 404:
            raise


def _delete_leftovers(namespace: str, owner_uid: str, playbook: str) -> None:
    listed = get(_pods_path(namespace), query=[("labelSelector", node_pod.selector(owner_uid, playbook))])
    for pod in listed.get("items") or []:
        log.info("deleting the on-node pod %s left by an earlier run", pod["metadata"]["name"])
        _delete(namespace, pod["metadata"]["name"])


def _pods_path(namespace: str, name: str = "") -> str:
    return f"/api/v1/namespaces/{quoted(namespace)}/pods" + (f"/{quoted(name)}" if name else "")


def _read(namespace: str, name: str) -> dict[str, Any]:
    return get(_pods_path(namespace, name))


def _wait(settings: Settings, name: str, timeout: int, cancelled: threading.Event) -> tuple[str, dict[str, Any] | None]:
    """Until the pod ends: ("ended", pod), ("timeout", pod), ("canceled", pod); NodePodError
    when it cannot start (image, container config, not started in time)."""
    namespace = settings.node_namespace
    started = time.monotonic()
    running_since: float | None = None
    pod: dict[str, Any] | None = None
    while True:
        if cancelled.wait(POLL_SECONDS):
            return "canceled", pod
        pod = _read(namespace, name)
        phase = (pod.get("status") or {}).get("phase", "Pending")
        if phase in ("Succeeded", "Failed"):
            return "ended", pod
        why = node_pod.stuck(pod)
        if why:
            raise NodePodError(f"on-node pod {namespace}/{name} cannot start: {why}")
        now = time.monotonic()
        if phase == "Running":
            running_since = running_since or now
            if now - running_since > timeout:
                return "timeout", pod
        elif now - started > settings.pod_start_timeout:
            state = node_pod.ended(pod)
            raise NodePodError(
                f"on-node pod {namespace}/{name} did not start on its Node within {settings.pod_start_timeout} s "
                f"({state}): is the Node's kubelet running?"
            )


def _log(namespace: str, name: str) -> str:
    try:
        answer = request(
            "GET",
            f"{_pods_path(namespace, name)}/log",
            query=[("container", node_pod.CONTAINER)],
            timeout=(10, 300),
        )
    except ApiException as error:
        return f"(no log: {server_message(error)})"
    return answer.decode(errors="replace")


def _keep_reports(report_dir: Path, reports: dict[str, str]) -> None:
    """The reports the pod sent, under the run's report directory (as validate.yml
    writes them on a controller), never outside it."""
    root = report_dir.resolve()
    for relative, text in reports.items():
        target = (root / relative).resolve()
        if not target.is_relative_to(root) or target == root:
            log.warning("report %r from an on-node pod is outside the report directory: ignored", relative)
            continue
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_text(text)


def run(
    settings: Settings,
    owner: str,
    node: str,
    playbook: str,
    generation: int,
    run_document: dict[str, Any],
    run_dir: Path,
    cancelled: threading.Event,
) -> tuple[str, int, list[str]]:
    """One run on the node: (ansible-runner's status, rc, failed tasks), as a run here ends."""
    namespace = settings.node_namespace
    timeout = int(run_document["timeout"])
    name = node_pod.pod_name(owner, playbook, generation, secrets.token_hex(3))
    document = json.dumps(run_document)
    if len(document.encode()) > RUN_DOCUMENT_LIMIT:
        return (
            "failed",
            1,
            [
                f"the run for the on-node pod is {len(document.encode())} bytes, over the {RUN_DOCUMENT_LIMIT} an "
                "environment variable may hold (Linux: 128 KiB): make the site's group_vars smaller"
            ],
        )
    try:
        owner_ref = _owner(owner)
        body = node_pod.manifest(name, namespace, node, image(settings), document, owner_ref, playbook, timeout)
        _delete_leftovers(namespace, owner_ref["uid"], playbook)
        request("POST", _pods_path(namespace), body)
    except ApiException as error:
        if not permanent(error):
            raise
        return "failed", 1, [f"on-node pod {namespace}/{name}: the API server refused it: {server_message(error)}"]
    except NodePodError as error:
        return "failed", 1, [str(error)]
    log.info("%s on %s: on-node pod %s/%s created", playbook, node, namespace, name)
    try:
        how, pod = _wait(settings, name, timeout, cancelled)
        if how != "ended":
            return how, 1, []  # timeout or canceled: RunResult.reason() says it
        text = _log(namespace, name)
        (run_dir / "pod.log").write_text(text)
        result = contract.parse_result(text)
        if result is None:
            last = text.rstrip().rsplit("\n", 1)[-1][:300]
            return "failed", 1, [f"on-node pod {namespace}/{name} ended {node_pod.ended(pod or {})}: {last}"]
        _keep_reports(run_dir / "reports", result["reports"])
        if result.get("omitted"):
            log.warning("on-node pod %s left out reports too big to send: %s", name, result["omitted"])
        return result["status"], result["rc"], [str(f) for f in result["failures"]]
    except NodePodError as error:
        return "failed", 1, [str(error)]
    finally:
        try:
            _delete(namespace, name)
        except (ApiException, urllib3.exceptions.HTTPError) as error:
            # The result stands; the next run of this RuntimeNode and playbook deletes it
            # (leftovers), and the RuntimeNode's deletion takes it with it.
            log.warning("on-node pod %s/%s not deleted: %s", namespace, name, error)
