"""criops.kube.client's requests against a small fake API server: the paths, the content
types, the token, the API server's errors as ApiException, and none of the client's
generated API classes (or their models) imported on the way."""

from __future__ import annotations

import json
import subprocess
import sys
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, ClassVar

import pytest

REPO = Path(__file__).resolve().parents[2]


def _status(code: int, message: str) -> dict[str, Any]:
    return {"kind": "Status", "apiVersion": "v1", "status": "Failure", "message": message, "code": code}


ANSWERS: dict[tuple[str, str], tuple[int, str, bytes]] = {
    ("GET", "/api/v1/nodes/w-1"): (200, "application/json", b'{"metadata": {"name": "w-1"}}'),
    ("GET", "/api/v1/nodes/gone"): (404, "application/json", json.dumps(_status(404, "gone")).encode()),
    ("PATCH", "/api/v1/nodes/w-1"): (200, "application/json", b'{"metadata": {"name": "w-1"}}'),
    ("PATCH", "/api/v1/nodes/w-1/status"): (
        422,
        "application/json",
        json.dumps(_status(422, 'Node "w-1" is invalid: status.conditions')).encode(),
    ),
    ("PATCH", "/apis/criops.dev/v1alpha1/runtimenodes/rn/status"): (200, "application/json", b"{}"),
    ("POST", "/api/v1/namespaces/criops-system/events"): (201, "application/json", b"{}"),
    ("GET", "/api/v1/namespaces/criops-nodes/pods/p/log?container=ansible"): (200, "text/plain", b"last line\n"),
}


class FakeApi(BaseHTTPRequestHandler):
    seen: ClassVar[list[dict[str, Any]]] = []

    def _answer(self) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        body = json.loads(self.rfile.read(length)) if length else None
        FakeApi.seen.append(
            {
                "method": self.command,
                "path": self.path,
                "content_type": self.headers.get("Content-Type"),
                "accept": self.headers.get("Accept"),
                "authorization": self.headers.get("Authorization"),
                "body": body,
            }
        )
        status, content_type, data = ANSWERS.get((self.command, self.path), (405, "text/plain", b"unexpected"))
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    do_GET = do_PATCH = do_POST = _answer

    def log_message(self, *_: Any) -> None:
        pass


@pytest.fixture
def api(tmp_path: Path) -> Iterator[Path]:
    server = ThreadingHTTPServer(("127.0.0.1", 0), FakeApi)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    kubeconfig = tmp_path / "kubeconfig"
    kubeconfig.write_text(
        json.dumps(
            {
                "apiVersion": "v1",
                "kind": "Config",
                "clusters": [{"name": "c", "cluster": {"server": f"http://127.0.0.1:{server.server_port}"}}],
                "users": [{"name": "u", "user": {"token": "t0ken"}}],
                "contexts": [{"name": "x", "context": {"cluster": "c", "user": "u"}}],
                "current-context": "x",
            }
        )
    )
    FakeApi.seen.clear()
    yield kubeconfig
    server.shutdown()
    server.server_close()


CALLS = """
import asyncio, json, sys
from kubernetes.client.exceptions import ApiException
from criops.kube import client, node_pods

before = set(sys.modules)

async def main():
    assert await client.read_node("w-1") == {"metadata": {"name": "w-1"}}
    assert await client.read_node("gone") is None
    await client.patch_node("w-1", {"metadata": {"labels": {"a": "b"}}})
    try:
        await client.patch_node_status("w-1", {"status": {"conditions": []}})
    except ApiException as error:
        refused = [error.status, client.permanent(error), client.server_message(error)]
    await client.patch_status("rn", {"phase": "Ready"})
    await client.post_event("criops-system", {"metadata": {"name": "rn", "uid": "u-1"}}, "Normal", "Ready", "ok")
    return refused

refused = asyncio.run(main())
log = node_pods._log("criops-nodes", "p")
print(json.dumps({
    "refused": refused,
    "log": log,
    "imported": sorted(m for m in set(sys.modules) - before if m.startswith("kubernetes.client.")),
}))
"""


def test_api_calls_are_plain_json_requests_without_the_generated_api_classes(api: Path) -> None:
    done = subprocess.run(
        [sys.executable, "-c", CALLS],
        env={"KUBECONFIG": str(api), "PYTHONPATH": str(REPO / "operator")},
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    result = json.loads(done.stdout.strip().splitlines()[-1])
    # The API server's own words and a status that retrying cannot change.
    assert result["refused"] == [422, True, 'Node "w-1" is invalid: status.conditions']
    assert result["log"] == "last line\n"
    # CoreV1Api alone costs the operator about 20 MiB: neither it nor a model is imported.
    assert result["imported"] == []

    seen = {(r["method"], r["path"]): r for r in FakeApi.seen}
    assert all(r["authorization"] == "Bearer t0ken" for r in FakeApi.seen)
    node_patch = seen["PATCH", "/api/v1/nodes/w-1"]
    assert node_patch["content_type"] == "application/merge-patch+json"
    assert node_patch["body"] == {"metadata": {"labels": {"a": "b"}}}
    assert seen["PATCH", "/api/v1/nodes/w-1/status"]["content_type"] == "application/strategic-merge-patch+json"
    status_patch = seen["PATCH", "/apis/criops.dev/v1alpha1/runtimenodes/rn/status"]
    assert status_patch["content_type"] == "application/merge-patch+json"
    assert status_patch["body"] == {"status": {"phase": "Ready"}}
    event = seen["POST", "/api/v1/namespaces/criops-system/events"]
    assert event["content_type"] == "application/json"
    assert event["body"]["involvedObject"]["uid"] == "u-1" and event["body"]["reason"] == "Ready"
    # The API server answers a log in text but refuses a request that accepts only text/plain.
    assert all(r["accept"] == "application/json" for r in FakeApi.seen)
