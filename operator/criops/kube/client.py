"""One `kubernetes` API client for the operator, used from worker threads.

The official client is synchronous; every call runs in a thread so the kopf
event loop never waits on the network.
"""

from __future__ import annotations

import asyncio
import base64
import json
import os
from datetime import UTC, datetime
from functools import cache
from typing import Any

from kubernetes import client, config
from kubernetes.client.exceptions import ApiException

GROUP, VERSION, PLURAL = "criops.dev", "v1alpha1", "runtimenodes"
MERGE_PATCH = "application/merge-patch+json"
STRATEGIC_MERGE_PATCH = "application/strategic-merge-patch+json"
REQUEST_TIMEOUT = (10, 60)  # connect, read (seconds)


class SecretError(LookupError):
    """The SSH key Secret a RuntimeNode names is missing or incomplete."""


@cache
def api_client() -> client.ApiClient:
    try:
        config.load_incluster_config()
    except config.ConfigException:
        config.load_kube_config()
    return client.ApiClient()


def core() -> client.CoreV1Api:
    return client.CoreV1Api(api_client())


def custom() -> client.CustomObjectsApi:
    return client.CustomObjectsApi(api_client())


def raw(response: Any) -> dict[str, Any]:
    """The JSON body of a call made with _preload_content=False."""
    return json.loads(response.data)


async def read_node(name: str) -> dict[str, Any] | None:
    def call() -> dict[str, Any] | None:
        try:
            return raw(core().read_node(name, _preload_content=False, _request_timeout=REQUEST_TIMEOUT))
        except ApiException as error:
            if error.status == 404:
                return None
            raise

    return await asyncio.to_thread(call)


async def patch_node(name: str, body: dict[str, Any]) -> None:
    await asyncio.to_thread(core().patch_node, name, body, _content_type=MERGE_PATCH, _request_timeout=REQUEST_TIMEOUT)


async def patch_node_status(name: str, body: dict[str, Any]) -> None:
    # Strategic merge: Node conditions merge by type, so others' conditions stay.
    await asyncio.to_thread(
        core().patch_node_status, name, body, _content_type=STRATEGIC_MERGE_PATCH, _request_timeout=REQUEST_TIMEOUT
    )


async def patch_status(name: str, status: dict[str, Any]) -> None:
    """Merge `status` into a RuntimeNode's status subresource (lists are replaced whole)."""
    await asyncio.to_thread(
        custom().patch_cluster_custom_object_status,
        GROUP,
        VERSION,
        PLURAL,
        name,
        {"status": status},
        _content_type=MERGE_PATCH,
        _request_timeout=REQUEST_TIMEOUT,
    )


async def post_event(namespace: str, obj: dict[str, Any], kind: str, reason: str, message: str) -> None:
    """An Event about a RuntimeNode, in the operator's namespace (cluster-scoped objects have none)."""
    meta = obj.get("metadata", {})
    stamp = datetime.now(UTC)
    event = {
        "metadata": {"generateName": f"{meta.get('name', 'runtimenode')}.", "namespace": namespace},
        "involvedObject": {
            "apiVersion": f"{GROUP}/{VERSION}",
            "kind": "RuntimeNode",
            # The API server wants the Event's namespace here, even for cluster-scoped objects.
            "namespace": namespace,
            "name": meta.get("name"),
            "uid": meta.get("uid"),
            "resourceVersion": meta.get("resourceVersion"),
        },
        "type": kind,
        "reason": reason,
        "message": message[:1024],
        "source": {"component": "criops-operator"},
        "reportingComponent": "criops.dev/operator",
        "reportingInstance": os.environ.get("HOSTNAME", "criops-operator"),
        "firstTimestamp": stamp.strftime("%Y-%m-%dT%H:%M:%SZ"),
        "lastTimestamp": stamp.strftime("%Y-%m-%dT%H:%M:%SZ"),
        "count": 1,
    }
    await asyncio.to_thread(core().create_namespaced_event, namespace, event, _request_timeout=REQUEST_TIMEOUT)


async def ssh_key(namespace: str, name: str) -> str:
    """The private key in Secret `namespace/name`, key ssh-privatekey (type kubernetes.io/ssh-auth)."""

    def call() -> str:
        try:
            secret = raw(
                core().read_namespaced_secret(name, namespace, _preload_content=False, _request_timeout=REQUEST_TIMEOUT)
            )
        except ApiException as error:
            if error.status == 404:
                raise SecretError(f"Secret {namespace}/{name} not found (spec.access.sshKeySecretRef.name)") from None
            raise
        encoded = (secret.get("data") or {}).get("ssh-privatekey")
        if not encoded:
            raise SecretError(f"Secret {namespace}/{name} has no key ssh-privatekey")
        return base64.b64decode(encoded).decode()

    return await asyncio.to_thread(call)
