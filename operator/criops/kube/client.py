"""One `kubernetes` API client for the operator, used from worker threads.

The official client is synchronous; every call runs in a thread so the kopf
event loop never waits on the network.

Calls go through the client's ApiClient (its configuration: credentials, TLS,
the connection pool, API_RETRIES) as plain JSON requests (`request`), not
through its generated API classes: importing CoreV1Api alone (its pydantic
models and a validator per method) costs about 20 MiB of the operator's
memory, and their answers would be decoded into models criops never reads.
"""

from __future__ import annotations

import asyncio
import base64
import json
import os
import urllib.parse
from datetime import UTC, datetime
from functools import cache
from typing import Any

import urllib3
from kubernetes import client, config
from kubernetes.client.exceptions import ApiException

from ..api import API_VERSION, GROUP, PLURAL, VERSION
from ..contract import SshAccess
from ..core import runtimeclass
from ..settings import Settings

MERGE_PATCH = "application/merge-patch+json"
STRATEGIC_MERGE_PATCH = "application/strategic-merge-patch+json"
REQUEST_TIMEOUT = (10, 60)  # connect, read (seconds)


# Answers that the same request will get again: retrying cannot help, a spec or
# policy change must come first. 409 (a conflict) and 429/5xx are worth a retry.
PERMANENT_STATUSES = frozenset({400, 403, 404, 405, 410, 422})


def permanent(error: Exception) -> bool:
    """Whether an API error is one that retrying the same request cannot fix."""
    return isinstance(error, ApiException) and error.status in PERMANENT_STATUSES


def server_message(error: ApiException) -> str:
    """The API server's own words in an error (its Status message), else the HTTP reason."""
    try:
        message = json.loads(error.body or "").get("message")
    except (ValueError, AttributeError):
        message = None
    return str(message or f"{error.status} {error.reason}")


class SecretError(LookupError):
    """The SSH key Secret a RuntimeNode names is missing or incomplete."""


class ApiRetry(urllib3.Retry):
    """urllib3's Retry, plus a few quick retries of 401 and 403: a kube-apiserver
    that has just started refuses requests until its token and RBAC caches are
    warm (seconds). A lasting refusal still reaches the caller within seconds."""

    STARTUP_STATUSES = frozenset({401, 403})
    STARTUP_RETRIES = 5

    def is_retry(self, method: str, status_code: int, has_retry_after: bool = False) -> bool:
        if status_code in self.STARTUP_STATUSES:
            seen = sum(1 for entry in self.history if entry.status in self.STARTUP_STATUSES)
            return seen < self.STARTUP_RETRIES
        return super().is_retry(method, status_code, has_retry_after)


# An API server that is down (restarting, upgrading) or overloaded is waited
# out inside each call, retrying at most 2 s apart for about 5 minutes, instead
# of failing the handler: kopf would retry a failed handler a minute later and
# run critest again for a generation whose verdict only waited to be written.
# PATCH and POST are retried too: criops' merge patches are idempotent, a Node
# patch carries its resourceVersion, and an Event twice is harmless.
API_RETRIES = ApiRetry(
    total=None,
    connect=150,
    read=3,
    status=150,
    other=0,
    allowed_methods=None,
    status_forcelist=(429, 500, 502, 503, 504),
    backoff_factor=0.5,
    backoff_max=2,
    raise_on_status=False,
)


@cache
def api_client() -> client.ApiClient:
    configuration = client.Configuration()
    try:
        config.load_incluster_config(client_configuration=configuration)
    except config.ConfigException:
        config.load_kube_config(client_configuration=configuration)
    configuration.retries = API_RETRIES
    # One kept connection per API thread: a smaller pool (the client's default is
    # 5 per CPU) closes connections under load and makes new TLS handshakes.
    configuration.connection_pool_maxsize = Settings.from_env().api_threads
    return client.ApiClient(configuration)


def request(
    method: str,
    path: str,
    body: Any = None,
    *,
    query: list[tuple[str, Any]] | None = None,
    content_type: str = "application/json",
    timeout: tuple[int, int] = REQUEST_TIMEOUT,
) -> bytes:
    """One API request (from a worker thread): `path` below the server's URL, `body`
    sent as JSON; the answer's body, undecoded. An answer other than 2xx raises
    ApiException (status, reason, body), as the client's API classes do."""
    api = api_client()
    # Also for a pod's log, which comes as text: the API server refuses an Accept of text/plain.
    headers = {"Accept": "application/json"}
    if body is not None:
        headers["Content-Type"] = content_type
    method, url, headers, body, _ = api.param_serialize(
        method, path, query_params=query, header_params=headers, body=body, auth_settings=["BearerToken"]
    )
    response = api.call_api(method, url, headers, body, _request_timeout=timeout)
    data: bytes = response.read()
    if not 200 <= response.status <= 299:
        raise ApiException.from_response(http_resp=response, body=None, data=None)
    return data


def get(path: str, query: list[tuple[str, Any]] | None = None) -> dict[str, Any]:
    """A GET's JSON answer."""
    answer: dict[str, Any] = json.loads(request("GET", path, query=query))
    return answer


def quoted(name: str) -> str:
    """A name as one path segment."""
    return urllib.parse.quote(name, safe="")


def runtime_nodes_path(name: str = "") -> str:
    return f"/apis/{GROUP}/{VERSION}/{PLURAL}" + (f"/{quoted(name)}" if name else "")


async def read_node(name: str) -> dict[str, Any] | None:
    def call() -> dict[str, Any] | None:
        try:
            return get(f"/api/v1/nodes/{quoted(name)}")
        except ApiException as error:
            if error.status == 404:
                return None
            raise

    return await asyncio.to_thread(call)


async def patch_node(name: str, body: dict[str, Any]) -> None:
    await asyncio.to_thread(request, "PATCH", f"/api/v1/nodes/{quoted(name)}", body, content_type=MERGE_PATCH)


async def patch_node_status(name: str, body: dict[str, Any]) -> None:
    # Strategic merge: Node conditions merge by type, so others' conditions stay.
    await asyncio.to_thread(
        request, "PATCH", f"/api/v1/nodes/{quoted(name)}/status", body, content_type=STRATEGIC_MERGE_PATCH
    )


async def patch_status(name: str, status: dict[str, Any]) -> None:
    """Merge `status` into a RuntimeNode's status subresource (lists are replaced whole)."""
    await asyncio.to_thread(
        request, "PATCH", f"{runtime_nodes_path(name)}/status", {"status": status}, content_type=MERGE_PATCH
    )


async def post_event(namespace: str, obj: dict[str, Any], kind: str, reason: str, message: str) -> None:
    """An Event about a RuntimeNode, in the operator's namespace (cluster-scoped objects have none)."""
    meta = obj.get("metadata", {})
    stamp = datetime.now(UTC)
    event = {
        "metadata": {"generateName": f"{meta.get('name', 'runtimenode')}.", "namespace": namespace},
        "involvedObject": {
            "apiVersion": API_VERSION,
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
    await asyncio.to_thread(request, "POST", f"/api/v1/namespaces/{quoted(namespace)}/events", event)


def ssh_access_from_secret(namespace: str, name: str, secret: dict[str, Any]) -> SshAccess:
    """SshAccess from a Secret's data: ssh-privatekey (required), known_hosts (optional)."""
    data = secret.get("data") or {}
    if not data.get("ssh-privatekey"):
        raise SecretError(f"Secret {namespace}/{name} has no key ssh-privatekey")
    key = base64.b64decode(data["ssh-privatekey"]).decode()
    known_hosts = None
    if "known_hosts" in data:
        known_hosts = base64.b64decode(data["known_hosts"]).decode(errors="replace")
        if not any(line.strip() and not line.lstrip().startswith("#") for line in known_hosts.splitlines()):
            raise SecretError(
                f"Secret {namespace}/{name} has an empty known_hosts: give the node's host keys"
                " (ssh-keyscan) or leave the key out"
            )
    return SshAccess(key, known_hosts)


async def ssh_access(namespace: str, name: str) -> SshAccess:
    """The SSH key and host keys in Secret `namespace/name` (type kubernetes.io/ssh-auth)."""

    def call() -> SshAccess:
        try:
            secret = get(f"/api/v1/namespaces/{quoted(namespace)}/secrets/{quoted(name)}")
        except ApiException as error:
            if error.status == 404:
                raise SecretError(f"Secret {namespace}/{name} not found (spec.access.sshKeySecretRef.name)") from None
            raise
        return ssh_access_from_secret(namespace, name, secret)

    return await asyncio.to_thread(call)


def runtime_class_path(name: str = "") -> str:
    return "/apis/node.k8s.io/v1/runtimeclasses" + (f"/{quoted(name)}" if name else "")


async def apply_runtime_class(body: dict[str, Any]) -> bool:
    """Create the RuntimeClass, or bring a criops-managed one in line; True when it changed."""

    def call() -> bool:
        name = body["metadata"]["name"]
        try:
            current = get(runtime_class_path(name))
        except ApiException as error:
            if error.status != 404:
                raise
            request("POST", runtime_class_path(), body)
            return True
        if not runtimeclass.managed(current):
            return False  # Someone else's RuntimeClass of that name: left alone.
        if all(current.get(k) == body.get(k) for k in ("handler", "overhead", "scheduling")):
            return False
        # handler is immutable; overhead and scheduling can be patched (a None drops an overhead).
        patch = {k: body.get(k) for k in ("overhead", "scheduling")}
        request("PATCH", runtime_class_path(name), patch, content_type=MERGE_PATCH)
        return True

    return await asyncio.to_thread(call)


async def list_pods() -> list[dict[str, Any]]:
    """Every pod of the cluster (the RuntimeClass guard looks at their spec and phase)."""

    def call() -> list[dict[str, Any]]:
        return list(get("/api/v1/pods").get("items") or [])

    return await asyncio.to_thread(call)


async def delete_runtime_class(name: str) -> bool:
    """Delete a criops-managed RuntimeClass; True when it was deleted."""

    def call() -> bool:
        try:
            current = get(runtime_class_path(name))
        except ApiException as error:
            if error.status == 404:
                return False
            raise
        if not runtimeclass.managed(current):
            return False
        request("DELETE", runtime_class_path(name))
        return True

    return await asyncio.to_thread(call)


async def list_runtime_nodes() -> list[dict[str, Any]]:
    def call() -> list[dict[str, Any]]:
        items: list[dict[str, Any]] = get(runtime_nodes_path()).get("items", [])
        return items

    return await asyncio.to_thread(call)


async def read_runtime_node(name: str) -> dict[str, Any] | None:
    """One RuntimeNode as the API server has it now; None when it is gone."""

    def call() -> dict[str, Any] | None:
        try:
            found = get(runtime_nodes_path(name))
        except ApiException as error:
            if error.status == 404:
                return None
            raise
        return found

    return await asyncio.to_thread(call)
