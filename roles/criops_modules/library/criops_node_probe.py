#!/usr/bin/python
"""Read what the roles compare against in one module call: it never changes the node."""

from __future__ import annotations

import base64
import hashlib
import os
import shlex
import shutil
import stat

from ansible.module_utils.basic import AnsibleModule

DOCUMENTATION = r"""
module: criops_node_probe
short_description: Read the node state criops' roles decide on, in one call
description:
  - Reads only. One round trip instead of a stat, slurp or command per item, so a run that
    finds nothing to do stays short while every check still looks at the node itself.
options:
  exists:
    description: Paths to test for existence (following links).
    type: list
    elements: path
    default: []
  sysctls:
    description: Kernel parameters to read, such as C(net.ipv4.ip_forward); a missing one reads as null.
    type: list
    elements: str
    default: []
  sha256:
    description: Files to hash; a missing file hashes to null.
    type: list
    elements: path
    default: []
  stat:
    description: Paths whose mode (octal string), uid and gid to read (following links); a missing one reads as null.
    type: list
    elements: path
    default: []
  links:
    description: Symbolic links to read; a path that is not a link reads as null.
    type: list
    elements: path
    default: []
  read:
    description: Files to read whole (base64); a missing one reads as null, an unreadable one fails.
    type: list
    elements: path
    default: []
  dpkg:
    description: Also list installed Debian packages and unfinished dpkg work (none on a node without dpkg).
    type: bool
    default: false
  node:
    description:
      - >-
        Also report what the node is (RV(node)): what the roles would otherwise gather facts
        for, read in this same call from os-release, uname and systemd's own markers.
    type: bool
    default: false
  swap:
    description: Also report the swap space in MiB, from /proc/meminfo.
    type: bool
    default: false
  units:
    description: systemd units whose C(ActiveState) and C(UnitFileState) to read, in one C(systemctl show).
    type: list
    elements: str
    default: []
"""

RETURN = r"""
exists: {description: Path to true/false., type: dict, returned: always}
sysctls: {description: Name to current value (whitespace collapsed) or null., type: dict, returned: always}
sha256: {description: Path to hex digest or null., type: dict, returned: always}
stat: {description: "Path to {mode, uid, gid} or null.", type: dict, returned: always}
links: {description: Path to link target or null., type: dict, returned: always}
read: {description: Path to base64 content or null., type: dict, returned: always}
packages: {description: Installed package name to version (dpkg only)., type: dict, returned: when dpkg}
dpkg_unfinished:
  description: Unfinished dpkg work (journal entries, dpkg --audit output); empty when none.
  type: str
  returned: when dpkg
swap_mb: {description: Swap space in MiB., type: int, returned: when swap}
node:
  description:
    - "distribution (C(Debian), C(Ubuntu), else os-release's NAME), version (VERSION_ID),
      major_version, family (C(Debian) for Debian and its derivatives, else the ID),
      architecture and kernel (uname), systemd (true when systemd is the init system:
      /run/systemd/system exists), container (the container manager the node runs in,
      such as C(podman) or C(docker), or null)."
  type: dict
  returned: when node
units:
  description: "Unit to {active, enabled}: its ActiveState and UnitFileState (empty for a unit that does not exist)."
  type: dict
  returned: always
"""


def _sysctl_path(name):
    # sysctl(8): a name with a slash is already a path; otherwise dots separate.
    return "/proc/sys/" + (name if "/" in name else name.replace(".", "/"))


def _read_sysctl(name):
    try:
        with open(_sysctl_path(name)) as handle:
            return " ".join(handle.read().split())
    except FileNotFoundError:
        return None


def _sha256(path):
    if not os.path.isfile(path):
        return None
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _stat(path):
    if not os.path.exists(path):
        return None
    found = os.stat(path)
    return {"mode": f"{stat.S_IMODE(found.st_mode):04o}", "uid": found.st_uid, "gid": found.st_gid}


def _read(path):
    if not os.path.lexists(path):
        return None
    with open(path, "rb") as handle:
        return base64.b64encode(handle.read()).decode()


def _dpkg(module):
    if shutil.which("dpkg-query") is None:
        return {}, ""
    rc, out, err = module.run_command(["dpkg-query", "-W", "-f", "${Package}\t${Status}\t${Version}\n"])
    if rc != 0:
        module.fail_json(msg=f"dpkg-query failed: {err.strip()}")
    packages = {}
    for line in out.splitlines():
        name, status, version = [*line.split("\t"), "", ""][:3]
        if status == "install ok installed":
            packages[name] = version
    unfinished = []
    journal = "/var/lib/dpkg/updates"
    if os.path.isdir(journal) and os.listdir(journal):
        unfinished.append(f"{journal} holds {len(os.listdir(journal))} unfinished entries")
    # dpkg --audit exits 1 when it lists packages.
    rc, out, err = module.run_command(["dpkg", "--audit"])
    if rc > 1:
        module.fail_json(msg=f"dpkg --audit failed: {err.strip()}")
    if out.strip():
        unfinished.append(out.strip())
    return packages, "\n".join(unfinished)


def _swap_mb():
    with open("/proc/meminfo") as handle:
        for line in handle:
            if line.startswith("SwapTotal:"):
                return int(line.split()[1]) // 1024
    return 0


# os-release IDs as Ansible's distribution facts name them, which is how
# node_prereqs_supported_distros names distributions.
_DISTRIBUTIONS = {"debian": "Debian", "ubuntu": "Ubuntu"}


def parse_os_release(text):
    """os-release(5): KEY=value lines, values shell-quoted."""
    fields = {}
    for line in text.splitlines():
        key, sep, value = line.strip().partition("=")
        if sep and key and not key.startswith("#"):
            words = shlex.split(value, comments=False) if value else [""]
            fields[key] = words[0] if words else ""
    return fields


def _container(module, root, systemd):
    if systemd:
        # systemd's own answer; "none" (exit 1) outside a container.
        detect = shutil.which("systemd-detect-virt")
        if detect and root == "/":
            rc, out, _ = module.run_command([detect, "--container"])
            return out.strip() if rc == 0 and out.strip() not in ("", "none") else None
    # Without systemd: the markers container managers leave.
    for marker, manager in (("run/.containerenv", "podman"), (".dockerenv", "docker")):
        if os.path.exists(os.path.join(root, marker)):
            return manager
    try:
        with open(os.path.join(root, "proc/1/environ"), "rb") as handle:
            for entry in handle.read().split(b"\0"):
                if entry.startswith(b"container="):
                    return entry[len(b"container=") :].decode(errors="replace") or None
    except OSError:
        pass
    return None


def node_facts(module, root="/"):
    """What the node is, for the roles' checks and decisions (`root` for tests)."""
    release = {}
    for name in ("etc/os-release", "usr/lib/os-release"):
        try:
            with open(os.path.join(root, name)) as handle:
                release = parse_os_release(handle.read())
            break
        except FileNotFoundError:
            continue
    ident = release.get("ID", "")
    version = release.get("VERSION_ID", "")
    systemd = os.path.isdir(os.path.join(root, "run/systemd/system"))
    uname = os.uname()
    return {
        "distribution": _DISTRIBUTIONS.get(ident, release.get("NAME", ident)),
        "version": version,
        "major_version": version.split(".")[0],
        "family": "Debian" if "debian" in [ident, *release.get("ID_LIKE", "").split()] else ident,
        "architecture": uname.machine,
        "kernel": uname.release,
        "systemd": systemd,
        "container": _container(module, root, systemd),
    }


def _units(module, names):
    if not names:
        return {}
    # One property block per unit, in the order asked, separated by a blank line.
    rc, out, err = module.run_command(
        ["systemctl", "show", "--property=ActiveState,UnitFileState", "--", *names], environ_update={"LC_ALL": "C"}
    )
    if rc != 0:
        module.fail_json(msg=f"systemctl show failed: {err.strip()}")
    blocks = [dict(line.split("=", 1) for line in block.splitlines() if "=" in line) for block in out.split("\n\n")]
    blocks = (blocks + [{}] * len(names))[: len(names)]
    return {
        name: {"active": block.get("ActiveState", ""), "enabled": block.get("UnitFileState", "")}
        for name, block in zip(names, blocks, strict=True)
    }


def main():
    paths = {"type": "list", "elements": "path", "default": []}
    module = AnsibleModule(
        argument_spec={
            "exists": paths,
            "sysctls": {"type": "list", "elements": "str", "default": []},
            "sha256": paths,
            "stat": paths,
            "links": paths,
            "read": paths,
            "dpkg": {"type": "bool", "default": False},
            "swap": {"type": "bool", "default": False},
            "units": {"type": "list", "elements": "str", "default": []},
            "node": {"type": "bool", "default": False},
        },
        supports_check_mode=True,
    )
    params = module.params
    try:
        result = _probe(module, params)
    except OSError as error:
        module.fail_json(msg=f"cannot read {error.filename}: {error.strerror}")
    module.exit_json(**result)


def _probe(module, params):
    result = {
        "changed": False,
        "exists": {path: os.path.exists(path) for path in params["exists"]},
        "sysctls": {name: _read_sysctl(name) for name in params["sysctls"]},
        "sha256": {path: _sha256(path) for path in params["sha256"]},
        "stat": {path: _stat(path) for path in params["stat"]},
        "links": {path: os.readlink(path) if os.path.islink(path) else None for path in params["links"]},
        "read": {path: _read(path) for path in params["read"]},
        "units": _units(module, params["units"]),
    }
    if params["dpkg"]:
        result["packages"], result["dpkg_unfinished"] = _dpkg(module)
    if params["swap"]:
        result["swap_mb"] = _swap_mb()
    if params["node"]:
        result["node"] = node_facts(module)
    return result


if __name__ == "__main__":
    main()
