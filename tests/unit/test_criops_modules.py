"""criops' own modules (roles/criops_modules), run as Ansible runs them, on a scratch directory."""

from __future__ import annotations

import base64
import hashlib
import json
import os
import stat
import subprocess
import sys
from pathlib import Path

MODULE = Path(__file__).resolve().parents[2] / "roles/criops_modules/library/criops_files.py"


def run(tmp_path: Path, paths: list[dict], check: bool = False, diff: bool = False) -> dict:
    args = tmp_path.parent / f"{tmp_path.name}-args.json"
    module_args = {"paths": paths, "_ansible_check_mode": check, "_ansible_diff": diff}
    args.write_text(json.dumps({"ANSIBLE_MODULE_ARGS": module_args}))
    done = subprocess.run([sys.executable, str(MODULE), str(args)], capture_output=True, text=True)
    return json.loads(done.stdout)


def tree(tmp_path: Path) -> list[dict]:
    return [
        {"path": str(tmp_path / "conf"), "state": "directory", "mode": "0755"},
        {"path": str(tmp_path / "conf/a.toml"), "state": "file", "content": "a = 1\n", "mode": "0644"},
        {"path": str(tmp_path / "conf/sub"), "state": "directory", "mode": "0750"},
        {"path": str(tmp_path / "conf/sub/b.toml"), "state": "file", "content": "b = 2\n", "mode": "0600"},
        {"path": str(tmp_path / "b-link"), "state": "link", "src": str(tmp_path / "conf/sub/b.toml")},
    ]


def test_writes_a_tree_in_order_then_changes_nothing(tmp_path: Path) -> None:
    first = run(tmp_path, tree(tmp_path))
    assert first["changed"] is True
    assert first["changed_paths"] == [entry["path"] for entry in tree(tmp_path)]
    assert (tmp_path / "conf/a.toml").read_text() == "a = 1\n"
    assert stat.S_IMODE((tmp_path / "conf/sub").stat().st_mode) == 0o750
    assert stat.S_IMODE((tmp_path / "conf/sub/b.toml").stat().st_mode) == 0o600
    assert os.readlink(tmp_path / "b-link") == str(tmp_path / "conf/sub/b.toml")
    again = run(tmp_path, tree(tmp_path))
    assert again["changed"] is False and again["changed_paths"] == []


def test_repairs_only_what_drifted(tmp_path: Path) -> None:
    run(tmp_path, tree(tmp_path))
    (tmp_path / "conf/a.toml").write_text("a = 'edited by hand'\n")
    (tmp_path / "conf/sub/b.toml").chmod(0o644)
    (tmp_path / "b-link").unlink()
    (tmp_path / "b-link").symlink_to("/elsewhere")
    repaired = run(tmp_path, tree(tmp_path))
    assert repaired["changed_paths"] == [
        str(tmp_path / "conf/a.toml"),
        str(tmp_path / "conf/sub/b.toml"),
        str(tmp_path / "b-link"),
    ]
    assert (tmp_path / "conf/a.toml").read_text() == "a = 1\n"
    assert stat.S_IMODE((tmp_path / "conf/sub/b.toml").stat().st_mode) == 0o600
    assert os.readlink(tmp_path / "b-link") == str(tmp_path / "conf/sub/b.toml")
    # No temporary files left beside the rewritten ones.
    assert sorted(p.name for p in (tmp_path / "conf").iterdir()) == ["a.toml", "sub"]


def test_absent_removes_a_file_or_link_and_refuses_a_directory(tmp_path: Path) -> None:
    run(tmp_path, tree(tmp_path))
    gone = [
        {"path": str(tmp_path / "conf/a.toml"), "state": "absent"},
        {"path": str(tmp_path / "b-link"), "state": "absent"},
        {"path": str(tmp_path / "never-there"), "state": "absent"},
    ]
    predicted = run(tmp_path, gone, check=True)
    assert predicted["changed_paths"] == [gone[0]["path"], gone[1]["path"]]
    assert (tmp_path / "conf/a.toml").exists() and (tmp_path / "b-link").is_symlink()
    removed = run(tmp_path, gone)
    assert removed["changed_paths"] == [gone[0]["path"], gone[1]["path"]]
    # The link went, not what it pointed at.
    assert not (tmp_path / "conf/a.toml").exists() and not os.path.lexists(tmp_path / "b-link")
    assert (tmp_path / "conf/sub/b.toml").exists()
    assert run(tmp_path, gone)["changed"] is False
    refused = run(tmp_path, [{"path": str(tmp_path / "conf/sub"), "state": "absent"}])
    assert refused.get("failed") and "is a directory" in refused["msg"]
    assert (tmp_path / "conf/sub/b.toml").exists()


def test_check_mode_predicts_and_writes_nothing(tmp_path: Path) -> None:
    predicted = run(tmp_path, tree(tmp_path), check=True, diff=True)
    assert predicted["changed_paths"] == [entry["path"] for entry in tree(tmp_path)]
    assert list(tmp_path.iterdir()) == []
    run(tmp_path, tree(tmp_path))
    (tmp_path / "conf/a.toml").write_text("a = 3\n")
    predicted = run(tmp_path, tree(tmp_path), check=True, diff=True)
    assert predicted["changed_paths"] == [str(tmp_path / "conf/a.toml")]
    assert predicted["diff"] == [
        {
            "before_header": str(tmp_path / "conf/a.toml"),
            "after_header": str(tmp_path / "conf/a.toml"),
            "before": "a = 3\n",
            "after": "a = 1\n",
        }
    ]
    assert (tmp_path / "conf/a.toml").read_text() == "a = 3\n"


def test_refuses_to_replace_a_directory_or_write_through_a_link(tmp_path: Path) -> None:
    (tmp_path / "dir").mkdir()
    refused = run(tmp_path, [{"path": str(tmp_path / "dir"), "state": "link", "src": "/x"}])
    assert refused.get("failed") and "is a directory" in refused["msg"]
    (tmp_path / "target").write_text("keep\n")
    (tmp_path / "link").symlink_to(tmp_path / "target")
    refused = run(tmp_path, [{"path": str(tmp_path / "link"), "state": "file", "content": "x\n"}])
    assert refused.get("failed") and "not a regular file" in refused["msg"]
    assert (tmp_path / "target").read_text() == "keep\n"


def test_validates_new_content_and_keeps_a_backup(tmp_path: Path) -> None:
    config = tmp_path / "config.toml"
    config.write_text("old = 1\n")
    entry = {"path": str(config), "state": "file", "backup": True, "validate": "grep -q '^new' %s"}
    refused = run(tmp_path, [{**entry, "content": "broken\n"}])
    assert refused.get("failed") and "validation failed" in refused["msg"], refused
    assert config.read_text() == "old = 1\n"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["config.toml"]
    written = run(tmp_path, [{**entry, "content": "new = 2\n"}])
    assert written["changed_paths"] == [str(config)]
    assert config.read_text() == "new = 2\n"
    assert Path(written["backups"][str(config)]).read_text() == "old = 1\n"


PROBE = MODULE.with_name("criops_node_probe.py")


def test_the_probe_reads_without_changing(tmp_path: Path) -> None:
    (tmp_path / "bin").write_bytes(b"\x7fELF binary")
    (tmp_path / "bin").chmod(0o640)
    (tmp_path / "link").symlink_to(tmp_path / "bin")
    args = tmp_path.parent / f"{tmp_path.name}-probe.json"
    module_args = {
        "exists": [str(tmp_path / "bin"), str(tmp_path / "none")],
        "sha256": [str(tmp_path / "bin"), str(tmp_path / "none")],
        "links": [str(tmp_path / "link"), str(tmp_path / "bin")],
        "stat": [str(tmp_path / "link"), str(tmp_path / "none")],
        "read": [str(tmp_path / "bin"), str(tmp_path / "none")],
        "sysctls": ["kernel.ostype", "kernel/ostype", "no.such.parameter"],
        "swap": True,
        "_ansible_check_mode": True,
    }
    args.write_text(json.dumps({"ANSIBLE_MODULE_ARGS": module_args}))
    done = subprocess.run([sys.executable, str(PROBE), str(args)], capture_output=True, text=True)
    found = json.loads(done.stdout)
    assert found["changed"] is False
    assert found["exists"] == {str(tmp_path / "bin"): True, str(tmp_path / "none"): False}
    assert found["sha256"][str(tmp_path / "bin")] == hashlib.sha256(b"\x7fELF binary").hexdigest()
    assert found["sha256"][str(tmp_path / "none")] is None
    assert found["stat"] == {
        str(tmp_path / "link"): {"mode": "0640", "uid": os.getuid(), "gid": os.getgid()},
        str(tmp_path / "none"): None,
    }
    assert found["links"] == {str(tmp_path / "link"): str(tmp_path / "bin"), str(tmp_path / "bin"): None}
    assert found["read"][str(tmp_path / "bin")] == base64.b64encode(b"\x7fELF binary").decode()
    assert found["read"][str(tmp_path / "none")] is None
    assert found["sysctls"] == {"kernel.ostype": "Linux", "kernel/ostype": "Linux", "no.such.parameter": None}
    assert isinstance(found["swap_mb"], int)


def test_a_file_given_by_sha256_is_checked_not_sent(tmp_path: Path) -> None:
    """Right content: only mode put right. Wrong or missing content: listed in differs, left alone."""
    good, bad = b"\x7fELF the wanted binary", b"\x7fELF another binary"
    (tmp_path / "same").write_bytes(good)
    (tmp_path / "same").chmod(0o700)
    (tmp_path / "other").write_bytes(bad)
    (tmp_path / "other").chmod(0o700)
    wanted = hashlib.sha256(good).hexdigest()
    entries = [
        {"path": str(tmp_path / name), "state": "file", "mode": "0755", "sha256": wanted}
        for name in ("same", "other", "missing")
    ]
    predicted = run(tmp_path, entries, check=True)
    assert predicted["changed_paths"] == [str(tmp_path / "same")]
    assert predicted["differs"] == [str(tmp_path / "other"), str(tmp_path / "missing")]
    assert stat.S_IMODE((tmp_path / "same").stat().st_mode) == 0o700
    done = run(tmp_path, entries)
    assert done["changed_paths"] == [str(tmp_path / "same")]
    assert done["differs"] == [str(tmp_path / "other"), str(tmp_path / "missing")]
    assert stat.S_IMODE((tmp_path / "same").stat().st_mode) == 0o755
    assert (tmp_path / "other").read_bytes() == bad and stat.S_IMODE((tmp_path / "other").stat().st_mode) == 0o700
    assert not (tmp_path / "missing").exists()
    again = run(tmp_path, entries)
    assert again["changed"] is False and again["differs"] == done["differs"]


def test_the_probe_reads_unit_states_from_one_systemctl_show(tmp_path: Path) -> None:
    """systemctl show prints one block per unit, in the order asked; a unit that does not
    exist has an empty UnitFileState. (A stand-in systemctl prints what systemd 252 prints.)"""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    calls = tmp_path / "calls"
    (bin_dir / "systemctl").write_text(
        "#!/bin/sh\n"
        f'echo "$@" >>{calls}\n'
        "printf 'ActiveState=active\\nUnitFileState=enabled\\n\\n'\n"
        "printf 'UnitFileState=\\nActiveState=inactive\\n'\n"
    )
    (bin_dir / "systemctl").chmod(0o755)
    args = tmp_path / "probe-units.json"
    module_args = {"units": ["containerd.service", "nothing.service"], "_ansible_check_mode": True}
    args.write_text(json.dumps({"ANSIBLE_MODULE_ARGS": module_args}))
    env = {**os.environ, "PATH": f"{bin_dir}:{os.environ['PATH']}"}
    done = subprocess.run([sys.executable, str(PROBE), str(args)], capture_output=True, text=True, env=env)
    found = json.loads(done.stdout)
    assert found["units"] == {
        "containerd.service": {"active": "active", "enabled": "enabled"},
        "nothing.service": {"active": "inactive", "enabled": ""},
    }
    assert calls.read_text().split() == [
        "show",
        "--property=ActiveState,UnitFileState",
        "--",
        "containerd.service",
        "nothing.service",
    ]


def _load(path: Path):
    """A module or plugin file of the role, imported for its functions."""
    import importlib.util

    spec = importlib.util.spec_from_file_location(path.stem, path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _probe_module():
    return _load(PROBE)


DEBIAN_12 = """PRETTY_NAME="Debian GNU/Linux 12 (bookworm)"
NAME="Debian GNU/Linux"
VERSION_ID="12"
VERSION="12 (bookworm)"
VERSION_CODENAME=bookworm
ID=debian
"""
UBUNTU_24 = """NAME="Ubuntu"
VERSION_ID="24.04"
ID=ubuntu
ID_LIKE=debian
"""


def _root(tmp_path: Path, os_release: str | None, *markers: str, environ: bytes = b"") -> Path:
    for name in markers:
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).mkdir() if name.endswith("/") else (tmp_path / name).touch()
    if os_release is not None:
        (tmp_path / "usr/lib").mkdir(parents=True)
        (tmp_path / "usr/lib/os-release").write_text(os_release)
    (tmp_path / "proc/1").mkdir(parents=True)
    (tmp_path / "proc/1/environ").write_bytes(environ)
    return tmp_path


def test_the_probe_says_what_the_node_is_as_the_roles_name_it(tmp_path: Path) -> None:
    """Distribution names and major versions in the form node_prereqs_supported_distros uses;
    the init system and container from the markers systemd and container managers leave."""
    probe = _probe_module()
    debian = probe.node_facts(None, str(_root(tmp_path / "debian", DEBIAN_12, "run/systemd/system/")))
    assert {k: debian[k] for k in ("distribution", "version", "major_version", "family", "systemd")} == {
        "distribution": "Debian", "version": "12", "major_version": "12", "family": "Debian", "systemd": True,
    }  # fmt: skip
    assert debian["architecture"] == os.uname().machine and debian["kernel"] == os.uname().release

    ubuntu = probe.node_facts(None, str(_root(tmp_path / "ubuntu", UBUNTU_24, ".dockerenv")))
    assert (ubuntu["distribution"], ubuntu["major_version"], ubuntu["family"]) == ("Ubuntu", "24", "Debian")
    assert (ubuntu["systemd"], ubuntu["container"]) == (False, "docker")

    rocky = 'NAME="Rocky Linux"\nID="rocky"\nID_LIKE="rhel centos fedora"\nVERSION_ID="9.4"\n'
    other = _root(tmp_path / "other", rocky, environ=b"PATH=/bin\0container=lxc\0")
    found = probe.node_facts(None, str(other))
    assert (found["distribution"], found["major_version"], found["family"]) == ("Rocky Linux", "9", "rocky")
    assert found["container"] == "lxc"
    assert (
        probe.node_facts(None, str(_root(tmp_path / "podman", DEBIAN_12, "run/.containerenv")))["container"] == "podman"
    )
    bare = probe.node_facts(None, str(_root(tmp_path / "bare", None)))
    assert (bare["distribution"], bare["major_version"], bare["container"]) == ("", "", None)


def test_os_release_values_are_unquoted_as_a_shell_would() -> None:
    fields = _probe_module().parse_os_release("# comment\nNAME='Debian GNU/Linux'\nID=debian\nEMPTY=\nBAD LINE\n")
    assert fields == {"NAME": "Debian GNU/Linux", "ID": "debian", "EMPTY": ""}


def _tarball_lookup():
    return _load(MODULE.parents[1] / "lookup_plugins/criops_tarball.py")


def test_the_binaries_tarball_is_named_by_content_and_holds_them_as_root_0755(tmp_path: Path) -> None:
    import tarfile

    lookup = _tarball_lookup()
    files = []
    for name, data in (("crictl", b"one"), ("critest", b"two")):
        (tmp_path / name).write_bytes(data)
        (tmp_path / name).chmod(0o600)
        files.append(str(tmp_path / name))
    digests = [hashlib.sha256(b"one").hexdigest(), hashlib.sha256(b"two").hexdigest()]
    name = lookup.tarball_name("cri-tools-v1", files, digests)
    assert name == lookup.tarball_name("cri-tools-v1", ["/elsewhere/crictl", "/x/critest"], digests)
    assert name != lookup.tarball_name("cri-tools-v1", files, [digests[0], hashlib.sha256(b"three").hexdigest()])
    assert name.startswith("cri-tools-v1-") and name.endswith(".tar")
    lookup.write_tarball(str(tmp_path / name), files)
    with tarfile.open(tmp_path / name) as archive:
        members = {m.name: (m.mode, m.uid, m.gid) for m in archive.getmembers()}
        assert archive.extractfile("critest").read() == b"two"
    assert members == {"crictl": (0o755, 0, 0), "critest": (0o755, 0, 0)}
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".partial-")] == []


def test_controller_digests_are_reused_only_while_the_file_is_the_same(tmp_path: Path) -> None:
    lookup = _load(MODULE.parents[1] / "lookup_plugins/criops_sha256.py")
    cache = tmp_path / "cache"
    binary = tmp_path / "critest"
    binary.write_bytes(b"one")
    # Just written: hashed, but not kept (a write in the same tick would leave its times).
    assert lookup.sha256_files([str(binary)], str(cache)) == [hashlib.sha256(b"one").hexdigest()]
    assert not (cache / "criops-sha256.json").exists()
    # Settled: kept, and a wrong digest planted in the cache proves the next answer comes from it.
    old = binary.stat().st_mtime_ns - 10**10
    os.utime(binary, ns=(old, old))
    settled = lookup.time.time_ns() + 3 * 10**9
    lookup.time = type("Clock", (), {"time_ns": staticmethod(lambda: settled)})
    assert lookup.sha256_files([str(binary)], str(cache)) == [hashlib.sha256(b"one").hexdigest()]
    kept = json.loads((cache / "criops-sha256.json").read_text())
    kept[str(binary)]["sha256"] = "planted"
    (cache / "criops-sha256.json").write_text(json.dumps(kept))
    assert lookup.sha256_files([str(binary)], str(cache)) == ["planted"]
    # Any write changes the inode's times: hashed again. Without a cache, always hashed.
    binary.write_bytes(b"two")
    assert lookup.sha256_files([str(binary)], str(cache)) == [hashlib.sha256(b"two").hexdigest()]
    assert lookup.sha256_files([str(binary)]) == [hashlib.sha256(b"two").hexdigest()]
    # A file replaced by another with the same size and times (a new inode) is hashed again.
    kept = json.loads((cache / "criops-sha256.json").read_text())
    kept[str(binary)]["sha256"] = "planted"
    (cache / "criops-sha256.json").write_text(json.dumps(kept))
    status = binary.stat()
    other = tmp_path / "other"
    other.write_bytes(b"six")
    os.utime(other, ns=(status.st_atime_ns, status.st_mtime_ns))
    other.replace(binary)
    assert lookup.sha256_files([str(binary)], str(cache)) == [hashlib.sha256(b"six").hexdigest()]


def test_every_plugin_documentation_is_yaml_ansible_can_load() -> None:
    """Ansible parses DOCUMENTATION when it loads a plugin: broken YAML fails the task that uses it."""
    import ast

    import yaml

    roots = Path(__file__).resolve().parents[2] / "roles"
    files = sorted(
        path for folder in ("library", "lookup_plugins", "filter_plugins", "action_plugins")
        for path in roots.glob(f"*/{folder}/*.py")
    )  # fmt: skip
    assert files
    for path in files:
        tree = ast.parse(path.read_text())
        for node in tree.body:
            if isinstance(node, ast.Assign) and any(getattr(t, "id", "") == "DOCUMENTATION" for t in node.targets):
                assert isinstance(node.value, ast.Constant), path
                assert isinstance(yaml.safe_load(node.value.value), dict), path
