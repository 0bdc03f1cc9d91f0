"""A RuntimeNode's spec, checked again and resolved into what a run needs.

The CRD's schema and CEL rules refuse most bad input at the API server; these
checks repeat the ones that guard the node (an object stored before a schema
change, or created with validation off, must not reach Ansible unchecked).
"""

from __future__ import annotations

import difflib
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from .node_labels import label_problem
from .runtimes import CATALOG
from .untrusted import refused_key

# The images of critest's --test-images-file a RuntimeNode may replace.
TEST_IMAGE_KEYS = ("defaultTestContainerImage", "webServerTestImage")

NAME = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$")
_HANDLER = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")
_HOST = re.compile(r"^[A-Za-z0-9]([-A-Za-z0-9.:]*[A-Za-z0-9])?$")
_USER = re.compile(r"^[a-z_][a-z0-9_-]*$")
_ENDPOINT = re.compile(r"^unix:///[^\s]+$")
_VARIABLE = re.compile(r"^[a-z][a-z0-9_]*$")
_DURATION = re.compile(r"(\d+)(s|m|h)")
# Variables that would let a RuntimeNode redirect Ansible itself (connection,
# become, interpreter) or criops' own plumbing.
_RESERVED_VAR_PREFIXES = ("ansible_", "criops_")


class SpecError(ValueError):
    """A spec field that cannot be acted on: `field` says which, the message what was expected."""

    def __init__(self, field: str, message: str) -> None:
        super().__init__(f"spec.{field}: {message}")
        self.field = field


# How Ansible reaches a node: over SSH (before it joins, or a fleet driven by
# ansible-playbook), on the operator's own machine, or from a privileged pod the
# operator places on the Node (criops.onnode; no SSH keys).
CONNECTIONS = ("ssh", "local", "pod")


@dataclass(frozen=True)
class Access:
    connection: str
    host: str
    port: int
    user: str
    secret: str


@dataclass(frozen=True)
class Validation:
    critest: bool
    focus: tuple[str, ...]
    skip: tuple[str, ...]
    expected_failures: tuple[str, ...]
    parallel: int
    interval_seconds: int
    timeout_seconds: int
    test_images: dict[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class CheckedSpec:
    """Everything one RuntimeNode asks for, checked and with defaults filled in."""

    node: str
    runtime: str
    group: str
    # The inventory group `group` is a child of ("" for none).
    parent_group: str
    endpoint: str
    handler: str
    access: Access
    validation: Validation
    provision: bool
    provision_vars: dict[str, Any]
    labels: dict[str, str]
    taint_until_validated: bool


def parse_duration(text: str) -> int:
    """Seconds in a Go-style duration of s/m/h parts, e.g. 1h30m."""
    if not text or _DURATION.sub("", text) != "":
        raise ValueError(f"'{text}' is not a duration like 30s, 5m or 1h30m")
    scale = {"s": 1, "m": 60, "h": 3600}
    return sum(int(n) * scale[unit] for n, unit in _DURATION.findall(text))


def _string_list(path: str, value: Any, patterns: bool = False) -> tuple[str, ...]:
    if value is None:
        return ()
    if not isinstance(value, list) or not all(isinstance(v, str) and v for v in value):
        raise SpecError(path, "expected a list of non-empty strings")
    if patterns:
        # ginkgo reads these as Go regular expressions; the schema cannot parse
        # them, so a broken one would only show as a critest error on the node.
        for index, pattern in enumerate(value):
            try:
                re.compile(pattern)
            except re.error as error:
                raise SpecError(f"{path}[{index}]", f"expected a regular expression, {pattern!r}: {error}") from None
    return tuple(value)


def _access(spec: dict[str, Any]) -> Access:
    access = spec.get("access")
    if not isinstance(access, dict):
        raise SpecError(
            "access", "required: how Ansible reaches the node ({connection, host, port, user, sshKeySecretRef})"
        )
    connection = access.get("connection", "ssh")
    if connection not in CONNECTIONS:
        raise SpecError("access.connection", f"expected one of {', '.join(CONNECTIONS)}, got {connection!r}")
    host = access.get("host", "")
    secret = (access.get("sshKeySecretRef") or {}).get("name", "")
    if connection == "ssh":
        if not isinstance(host, str) or not _HOST.match(host):
            raise SpecError("access.host", f"expected a DNS name or IP address, got {host!r}")
        if not isinstance(secret, str) or not NAME.match(secret):
            raise SpecError("access.sshKeySecretRef.name", f"expected the name of a Secret, got {secret!r}")
    if connection == "pod" and (host or secret):
        raise SpecError(
            "access",
            "connection pod reaches the Node named by nodeName from a pod placed there: "
            "host and sshKeySecretRef do not apply",
        )
    port = access.get("port", 22)
    if not isinstance(port, int) or isinstance(port, bool) or not 1 <= port <= 65535:
        raise SpecError("access.port", f"expected a port number 1-65535, got {port!r}")
    user = access.get("user", "root")
    if not isinstance(user, str) or not _USER.match(user):
        raise SpecError("access.user", f"expected a login name like root, got {user!r}")
    return Access(connection, host, port, user, secret)


def validation_interval(spec: Mapping[str, Any]) -> int:
    """spec.validation.interval in seconds (30 s - 24 h): how often the light probe runs."""
    raw = spec.get("validation") or {}
    if not isinstance(raw, Mapping):
        raise SpecError("validation", "expected an object")
    try:
        interval = parse_duration(raw.get("interval", "5m"))
    except ValueError as error:
        raise SpecError("validation.interval", str(error)) from None
    if not 30 <= interval <= 86400:
        raise SpecError("validation.interval", "expected between 30s and 24h")
    return interval


def _validation(spec: dict[str, Any]) -> Validation:
    interval = validation_interval(spec)
    raw = spec.get("validation") or {}
    parallel = raw.get("parallel", 1)
    if not isinstance(parallel, int) or not 1 <= parallel <= 8:
        raise SpecError("validation.parallel", f"expected 1-8, got {parallel!r}")
    timeout = raw.get("timeoutSeconds", 1800)
    if not isinstance(timeout, int) or not 60 <= timeout <= 7200:
        raise SpecError("validation.timeoutSeconds", f"expected 60-7200, got {timeout!r}")
    images = raw.get("testImages") or {}
    if not isinstance(images, dict) or not all(isinstance(v, str) and v for v in images.values()):
        raise SpecError("validation.testImages", "expected image references as strings")
    for key in images:
        if key not in TEST_IMAGE_KEYS:
            raise SpecError(f"validation.testImages.{key}", f"expected one of {', '.join(TEST_IMAGE_KEYS)}")
    return Validation(
        critest=bool(raw.get("critest", True)),
        focus=_string_list("validation.focus", raw.get("focus"), patterns=True),
        skip=_string_list("validation.skip", raw.get("skip"), patterns=True),
        expected_failures=_string_list("validation.expectedFailures", raw.get("expectedFailures")),
        parallel=parallel,
        interval_seconds=interval,
        timeout_seconds=timeout,
        test_images=dict(images),
    )


def _provision_vars(
    spec: dict[str, Any], runtime: str, role_variables: Mapping[str, frozenset[str]]
) -> tuple[bool, dict[str, Any]]:
    provision = spec.get("provision") or {}
    extra = provision.get("extraVars") or {}
    if not isinstance(extra, dict):
        raise SpecError("provision.extraVars", "expected an object of role variables")
    roles = CATALOG[runtime].all_roles
    known = frozenset().union(*(role_variables.get(role, frozenset()) for role in roles))
    for key in extra:
        if not isinstance(key, str) or not _VARIABLE.match(key):
            raise SpecError(f"provision.extraVars.{key}", "expected a role variable name (lower case, digits, _)")
        if key.startswith(_RESERVED_VAR_PREFIXES):
            raise SpecError(
                f"provision.extraVars.{key}",
                "ansible_* and criops_* variables are not accepted: connection and become come from spec.access",
            )
        if key not in known:
            closest = difflib.get_close_matches(key, sorted(known), n=1)
            hint = f"; did you mean {closest[0]}?" if closest else ""
            raise SpecError(
                f"provision.extraVars.{key}",
                f"not a variable of the roles site.yml runs for {runtime} ({', '.join(roles)}){hint}",
            )
    refused = refused_key(extra, "provision.extraVars")
    if refused:
        raise SpecError(*refused)
    return bool(provision.get("enabled", False)), dict(extra)


def _labels(spec: dict[str, Any]) -> dict[str, str]:
    labels = spec.get("labels") or {}
    if not isinstance(labels, dict):
        raise SpecError("labels", "expected an object of Node labels")
    for key, value in labels.items():
        if not isinstance(value, str):
            raise SpecError(f"labels.{key}", f"expected a string value, got {value!r}")
        problem = label_problem(str(key), value)
        if problem:
            raise SpecError(f"labels.{key}", problem)
    return {str(k): v for k, v in labels.items()}


def resolve(spec: dict[str, Any], role_variables: Mapping[str, frozenset[str]] | None = None) -> CheckedSpec:
    """The spec checked field by field; raises SpecError naming the first bad field.

    `role_variables` maps each role to the variables its argument specs declare
    (criops.role_variables); spec.provision.extraVars may set only those of the
    roles that run for the runtime. None knows no variables.
    """
    node = spec.get("nodeName")
    if not isinstance(node, str) or not NAME.match(node) or len(node) > 253:
        raise SpecError("nodeName", f"expected the name of a Node, got {node!r}")
    runtime = spec.get("runtime")
    if runtime not in CATALOG:
        raise SpecError("runtime", f"expected one of {', '.join(CATALOG)}, got {runtime!r}")
    facts = CATALOG[runtime]
    endpoint = spec.get("criEndpoint", facts.endpoint)
    if not isinstance(endpoint, str) or not _ENDPOINT.match(endpoint):
        raise SpecError("criEndpoint", f"expected unix:///path/to/socket, got {endpoint!r}")
    handler = spec.get("runtimeHandler", facts.handler)
    if "runtimeHandler" in spec:
        if not facts.has_handlers:
            raise SpecError("runtimeHandler", f"runtime {runtime} has no runtime handlers")
        if not isinstance(handler, str) or not _HANDLER.match(handler):
            raise SpecError("runtimeHandler", f"expected a RuntimeClass handler name, got {handler!r}")
        if facts.handler_fixed and handler != facts.handler:
            raise SpecError("runtimeHandler", f"runtime {runtime} validates the containerd handler '{facts.handler}'")
    validation = _validation(spec)
    if facts.cri_api == "v1alpha2":
        # critest v1.13 runs in one process and pulls every image by its upstream name.
        if validation.parallel != 1:
            raise SpecError("validation.parallel", f"runtime {runtime} (CRI v1alpha2, critest v1.13) expected 1")
        if validation.test_images:
            raise SpecError(
                "validation.testImages",
                f"runtime {runtime} (CRI v1alpha2, critest v1.13) takes no test images: serve its images "
                "under their upstream names through the runtime's registry mirrors",
            )
    labels = _labels(spec)
    provision, provision_vars = _provision_vars(spec, runtime, role_variables or {})
    return CheckedSpec(
        node=node,
        runtime=runtime,
        group=facts.group,
        parent_group=facts.parent_group,
        endpoint=endpoint,
        handler=handler,
        access=_access(spec),
        validation=validation,
        provision=provision,
        provision_vars=provision_vars,
        labels=labels,
        taint_until_validated=bool(spec.get("taintUntilValidated", False)),
    )


def kubelet_speaks_only_v1(kubelet_version: str) -> bool:
    """kubelet 1.26 dropped CRI v1alpha2: True for such a kubelet (e.g. v1.37.2).

    "" is a Node no kubelet has reported for (not joined yet): nothing there
    needs CRI v1.
    """
    if not kubelet_version:
        return False
    match = re.match(r"^v?(\d+)\.(\d+)", kubelet_version)
    if not match:
        return True  # A kubelet whose version cannot be read is assumed current.
    return (int(match.group(1)), int(match.group(2))) >= (1, 26)
