#!/usr/bin/python
"""critest against a CRI endpoint, its version and its report, in one module call."""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import tempfile

from ansible.module_utils.basic import AnsibleModule
from ansible.module_utils.criops_cri import Crictl, remove_critest_pods, run

DOCUMENTATION = r"""
module: criops_critest
short_description: Run critest once and return its JUnit report, output and version
description:
  - >-
    In a temporary directory (removed at the end): critest's test images file, then
    C(critest --version), then critest itself under C(flock) on O(lock), so two runs never
    share a CRI server. Failed specs are results, not errors: the call fails only when
    critest wrote no report (its own words say why) or ran out of O(timeout).
  - >-
    ginkgo v1 (critest v1.13, O(v1alpha2)) keeps only the last of repeated flags: focus
    and skip lists become one alternation each; it has no test images file and writes
    C(junit_.xml) into its report directory.
options:
  critest:
    description: critest of the endpoint's CRI API.
    type: str
    required: true
  endpoint:
    description: The CRI endpoint, unix:///path.
    type: str
    required: true
  v1alpha2:
    description: critest v1.13 (ginkgo v1 flags).
    type: bool
    default: false
  handler:
    description: The runtime handler; empty for the runtime's default.
    type: str
    default: ""
  label:
    description: The handler's name in messages.
    type: str
    default: default
  parallel:
    description: Parallel ginkgo processes (only more than 1 is passed on).
    type: int
    default: 1
  focus:
    description: ginkgo focus expressions.
    type: list
    elements: str
    default: []
  skip:
    description: ginkgo skip expressions.
    type: list
    elements: str
    default: []
  test_images:
    description: critest's test images file content (CRI v1).
    type: dict
    default: {}
  timeout:
    description: Seconds critest may wait for the lock and then run.
    type: int
    default: 1800
  lock:
    description: Node-side lock file.
    type: path
    required: true
  kubelet_duties:
    description: Optional. A script that runs critest while doing a kubelet's duty (its source); unset, none.
    type: str
  crictl:
    description: crictl, for O(kubelet_duties).
    type: str
    default: crictl
"""

RETURN = r"""
cmd:
  description: critest's argv as it ran (under flock, and the kubelet-duties script when asked).
  type: list
  elements: str
  returned: always
release: {description: "critest's release, such as v1.37.0 (unknown when it did not say).", type: str, returned: always}
exit_status:
  description: critest's exit status (not rc, which Ansible takes for failure; failed specs are results).
  type: int
  returned: always
stdout: {description: critest's output., type: str, returned: always}
stderr: {description: critest's error output., type: str, returned: always}
junit: {description: The JUnit report., type: str, returned: always}
kubelet_duties:
  description: What was done in the kubelet's place (null without O(kubelet_duties)).
  type: str
  returned: always
left_by_critest:
  description: >-
    Pods critest left in its own namespaces (a spec that failed before its cleanup), each
    C(namespace/name: removed), as a kubelet's garbage collection would remove them.
  type: list
  elements: str
  returned: always
"""


def release(version_output):
    """`critest version: v1.37.0`, or 1.13.0 without the v, as vX.Y.Z."""
    found = re.search(r"[0-9]+\.[0-9][0-9.]*", version_output or "")
    return "v" + found.group(0) if found else "unknown"


def critest_argv(params, scratch):
    """critest's argv, under flock and, when asked, under the kubelet-duties script."""
    endpoint = params["endpoint"]
    argv = ["flock", "--timeout", str(params["timeout"]), params["lock"]]
    if params["kubelet_duties"] is not None:
        argv += [
            "python3",
            f"{scratch}/kubelet-duties.py",
            params["crictl"],
            endpoint,
            f"{scratch}/kubelet-duties.log",
            "--",
        ]
    argv += [params["critest"], f"--runtime-endpoint={endpoint}", f"--image-endpoint={endpoint}"]
    if params["v1alpha2"]:
        argv += [f"--report-dir={scratch}", "--ginkgo.noColor"]
    else:
        argv += [f"--test-images-file={scratch}/test-images.yaml", f"--ginkgo.junit-report={scratch}/junit.xml"]
        argv += ["--ginkgo.no-color"]
    if params["handler"]:
        argv.append(f"--runtime-handler={params['handler']}")
    # --parallel=1 makes ginkgo refuse to run ("Use of go test -parallel").
    if params["parallel"] > 1:
        argv.append(f"--parallel={params['parallel']}")
    for flag, expressions in (("focus", params["focus"]), ("skip", params["skip"])):
        if expressions:
            argv.append(f"--ginkgo.{flag}=(?:" + ")|(?:".join(expressions) + ")")
    return argv


def why_no_report(stdout, stderr):
    """A Go panic's own line says why; otherwise critest's last words do."""
    lines = [line.strip() for line in (stdout + "\n" + stderr).splitlines() if line.strip()]
    return next((line for line in lines if line.startswith("panic: ")), lines[-1] if lines else "no output")


def run_critest(argv, timeout):
    """(rc, stdout, stderr, timed out); on time out the whole process group is killed."""
    process = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, start_new_session=True)
    try:
        out, err = process.communicate(timeout=timeout)
        return process.returncode, out, err, False
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)
        out, err = process.communicate()
        return process.returncode, out, err, True


def _read(path):
    if not os.path.exists(path):
        return None
    with open(path, errors="replace") as handle:
        return handle.read()


def main():
    module = AnsibleModule(
        argument_spec={
            "critest": {"type": "str", "required": True},
            "endpoint": {"type": "str", "required": True},
            "v1alpha2": {"type": "bool", "default": False},
            "handler": {"type": "str", "default": ""},
            "label": {"type": "str", "default": "default"},
            "parallel": {"type": "int", "default": 1},
            "focus": {"type": "list", "elements": "str", "default": []},
            "skip": {"type": "list", "elements": "str", "default": []},
            "test_images": {"type": "dict", "default": {}},
            "timeout": {"type": "int", "default": 1800},
            "lock": {"type": "path", "required": True},
            "kubelet_duties": {"type": "str"},
            "crictl": {"type": "str", "default": "crictl"},
        },
        supports_check_mode=False,
    )
    params = module.params
    label = params["label"]
    scratch = tempfile.mkdtemp(prefix="criops-critest.")
    try:
        if not params["v1alpha2"]:
            # JSON is YAML: no YAML library needed on the node.
            with open(f"{scratch}/test-images.yaml", "w") as handle:
                json.dump(params["test_images"], handle, indent=2)
        if params["kubelet_duties"] is not None:
            with open(f"{scratch}/kubelet-duties.py", "w") as handle:
                handle.write(params["kubelet_duties"])
        rc, version, err = run(module, [params["critest"], "--version"])
        if rc != 0:
            module.fail_json(msg=f"critest ({label}) --version exited {rc}: {why_no_report(version, err)}")
        argv = critest_argv(params, scratch)
        rc, out, err, timed_out = run_critest(argv, params["timeout"])
        # On a drained node the CRI server is the node's own: leave it as critest found it.
        left = remove_critest_pods(Crictl(module, params["crictl"], params["endpoint"]), params["v1alpha2"])
        stdout, stderr = out.decode(errors="replace"), err.decode(errors="replace")
        junit = _read(f"{scratch}/{'junit_.xml' if params['v1alpha2'] else 'junit.xml'}")
        duties = _read(f"{scratch}/kubelet-duties.log")
        result = {
            "cmd": argv,
            "release": release(version),
            "exit_status": rc,
            "stdout": stdout,
            "stderr": stderr,
            "kubelet_duties": duties,
            "left_by_critest": left,
        }
        if timed_out:
            module.fail_json(msg=f"critest ({label}) did not finish within {params['timeout']} s", **result)
        if junit is None:
            module.fail_json(
                msg=f"critest ({label}) exited {rc} without a report: {why_no_report(stdout, stderr)}", **result
            )
        module.exit_json(changed=False, junit=junit, **result)
    finally:
        shutil.rmtree(scratch, ignore_errors=True)


if __name__ == "__main__":
    main()
