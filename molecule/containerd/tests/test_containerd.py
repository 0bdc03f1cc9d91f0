"""What a user relies on after `site.yml` and `validate.yml` on a containerd node."""

from __future__ import annotations

import json
import os
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest

HANDLERS = ("runc", "crun")
LOCAL_MIRROR = "http://10.0.2.2:5000"


def report_dir(host, handler: str) -> Path:
    return Path(os.environ["CRIOPS_REPORT_DIR"]) / host.backend.get_hostname() / handler


def test_containerd_is_enabled_and_running(host):
    service = host.service("containerd")
    assert service.is_enabled
    assert service.is_running


def test_cri_socket_is_root_only(host):
    socket = host.file("/run/containerd/containerd.sock")
    assert socket.is_socket
    assert socket.user == "root"
    assert socket.group == "root"
    assert socket.mode & 0o007 == 0, f"socket is world-accessible: {oct(socket.mode)}"


def test_runtime_reports_both_handlers_and_the_mirror_directory(host):
    info = json.loads(host.check_output("crictl info -o json"))
    runtimes = info["config"]["containerd"]["runtimes"]
    assert {"runc", "crun"} <= set(runtimes)
    assert runtimes["runc"]["options"]["BinaryName"] == "/usr/sbin/runc"
    assert runtimes["crun"]["options"]["BinaryName"] == "/usr/bin/crun"
    assert info["config"]["containerd"]["defaultRuntimeName"] == "runc"
    assert info["config"]["registry"]["configPath"] == "/etc/containerd/certs.d"
    conditions = {c["type"]: c["status"] for c in info["status"]["conditions"]}
    # containerd 1.7 adds conditions of its own (deprecation warnings); these two are CRI's.
    assert conditions["RuntimeReady"] is True
    assert conditions["NetworkReady"] is True


@pytest.mark.parametrize("registry", ["registry.k8s.io", "gcr.io"])
def test_mirror_hosts_file_points_at_the_site_registry(host, registry):
    hosts_toml = host.file(f"/etc/containerd/certs.d/{registry}/hosts.toml")
    assert hosts_toml.contains(f'server = "https://{registry}"')
    assert hosts_toml.contains(f'[host."{LOCAL_MIRROR}"]')


def test_upstream_image_name_is_pulled_through_the_mirror(host):
    # The test host has no route to registry.k8s.io: only the mirror can serve it.
    image = "registry.k8s.io/e2e-test-images/busybox:1.29-2"
    host.check_output(f"crictl rmi {image} || true")
    host.check_output(f"crictl pull {image}")
    status = json.loads(host.check_output(f"crictl inspecti -o json {image}"))
    assert image in status["status"]["repoTags"]


@pytest.mark.parametrize("handler", HANDLERS)
def test_smoke_pod_answered_over_http_and_logged_it(host, handler):
    smoke = json.loads((report_dir(host, handler) / "smoke.json").read_text())
    assert smoke["handler"] == handler
    assert int(smoke["httpStatus"]) == 200
    assert smoke["httpBody"].strip() == "criops web server OK"
    assert "response:200" in smoke["log"]


@pytest.mark.parametrize("handler", HANDLERS)
def test_critest_report_is_on_the_controller_and_adds_up(host, handler):
    directory = report_dir(host, handler)
    junit = ET.parse(directory / "junit.xml").getroot()
    cases = junit.findall(".//testcase")
    summary = json.loads((directory / "summary.json").read_text())
    assert summary["handler"] == handler
    assert summary["version"] == "v1.37.0"
    assert summary["total"] == summary["passed"] + summary["failed"] + summary["skipped"]
    assert summary["total"] > 100, "critest ran a partial suite"
    # Every spec ("[It] …") in the JUnit file is counted once; suite setup nodes are not specs.
    assert summary["total"] == sum(1 for c in cases if c.get("name", "").startswith("[It] "))
    # The core of the CRI must work through every handler.
    groups = {g["name"]: g for g in summary["groups"]}
    for group in ("Runtime info", "Networking", "Container Mount Propagation"):
        assert groups[group]["failed"] == 0, f"{group} failed through {handler}"
    assert summary["runtime"]["name"] == "containerd"
