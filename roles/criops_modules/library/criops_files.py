#!/usr/bin/python
"""Directories, files and links of a role, brought to their wanted state in one module call."""

from __future__ import annotations

import hashlib
import os
import tempfile

from ansible.module_utils.basic import AnsibleModule
from ansible.module_utils.common.text.converters import to_bytes

DOCUMENTATION = r"""
module: criops_files
short_description: Ensure a set of directories, files and symbolic links in one call
description:
  - Each entry of O(paths) is brought to its state in order, so a directory listed before
    the files it holds exists when they are written. One module run instead of one per path,
    so on a node where nothing changed it is one round trip for a role's whole file set.
  - File content comes rendered from the controller (for example with the template lookup);
    a file is rewritten atomically only when its content differs.
  - Supports check mode and diff mode; reports which paths changed.
options:
  paths:
    description: What to ensure, in order.
    type: list
    elements: dict
    required: true
    suboptions:
      path:
        description: Absolute path.
        type: path
        required: true
      state:
        description:
          - C(directory), C(file) (needs O(paths[].content) or O(paths[].sha256)),
            C(link) (needs O(paths[].src)) or C(absent) (a file or link removed; a
            directory there is refused).
        type: str
        choices: [directory, file, link, absent]
        required: true
      content:
        description: The whole content of a file.
        type: str
      sha256:
        description:
          - >-
            Instead of O(paths[].content), for a file another task sends (too big to pass as an
            argument): the sha256 its content must have. When it has it, only its mode and owner
            are put right; when it is missing or differs, it is left alone and listed in RV(differs).
        type: str
      src:
        description: The target of a link.
        type: path
      mode:
        description: Mode of a directory or file, such as C("0644"); not applied to links.
        type: raw
      validate:
        description:
          - A command that checks a file's new content before it replaces the old, C(%s)
            standing for a temporary file beside it; the file is left alone when it fails.
        type: str
      backup:
        description: Keep a timestamped copy of a file's old content when it is rewritten.
        type: bool
        default: false
  owner:
    description: Owner of every directory and file; unmanaged when unset.
    type: str
  group:
    description: Group of every directory and file; unmanaged when unset.
    type: str
"""

RETURN = r"""
changed_paths:
  description: The paths that were (or in check mode would be) changed, in order.
  type: list
  elements: str
  returned: always
differs:
  description: The files given by sha256 that are missing or whose content differs, in order.
  type: list
  elements: str
  returned: always
backups:
  description: Path to the backup file made of its old content.
  type: dict
  returned: always
"""


def _file_args(module, entry, owner, group):
    params = {"path": entry["path"], "mode": entry.get("mode"), "owner": owner, "group": group}
    return module.load_file_common_arguments(params)


def _ensure_directory(module, entry, owner, group):
    path = entry["path"]
    if os.path.lexists(path) and not os.path.isdir(path):
        module.fail_json(msg=f"{path} exists and is not a directory")
    changed = False
    if not os.path.isdir(path):
        changed = True
        if module.check_mode:
            return True
        os.makedirs(path)
    return module.set_fs_attributes_if_different(_file_args(module, entry, owner, group), changed)


def _ensure_file(module, entry, owner, group, diffs, backups):
    path = entry["path"]
    if entry.get("content") is None:
        module.fail_json(msg=f"{path}: state file needs content")
    wanted = to_bytes(entry["content"], errors="surrogate_or_strict")
    if os.path.lexists(path) and (os.path.islink(path) or not os.path.isfile(path)):
        module.fail_json(msg=f"{path} exists and is not a regular file")
    current = None
    if os.path.exists(path):
        with open(path, "rb") as handle:
            current = handle.read()
    changed = current != wanted
    if changed and module._diff:
        diffs.append(
            {
                "before_header": path,
                "after_header": path,
                "before": "" if current is None else current.decode("utf-8", "replace"),
                "after": entry["content"],
            }
        )
    if changed and module.check_mode:
        return True
    if changed:
        directory = os.path.dirname(path)
        descriptor, temporary = tempfile.mkstemp(dir=directory, prefix=".criops-")
        try:
            with os.fdopen(descriptor, "wb") as handle:
                handle.write(wanted)
            if entry.get("validate"):
                if "%s" not in entry["validate"]:
                    module.fail_json(msg=f"{path}: validate must contain %s")
                rc, out, err = module.run_command(entry["validate"] % temporary)
                if rc != 0:
                    module.fail_json(
                        msg=f"{path}: validation failed: {entry['validate']}", rc=rc, stdout=out, stderr=err
                    )
            if entry.get("backup") and current is not None:
                backups[path] = module.backup_local(path)
            module.atomic_move(temporary, path)
        finally:
            if os.path.exists(temporary):
                os.unlink(temporary)
    return module.set_fs_attributes_if_different(_file_args(module, entry, owner, group), changed)


def _check_file(module, entry, owner, group, differs):
    """A file given by its sha256: attributes put right if the content matches, else listed."""
    path = entry["path"]
    if os.path.lexists(path) and (os.path.islink(path) or not os.path.isfile(path)):
        module.fail_json(msg=f"{path} exists and is not a regular file")
    if not os.path.exists(path):
        differs.append(path)
        return False
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    if digest.hexdigest() != entry["sha256"].lower():
        differs.append(path)
        return False
    return module.set_fs_attributes_if_different(_file_args(module, entry, owner, group), False)


def _ensure_link(module, entry):
    path, src = entry["path"], entry.get("src")
    if not src:
        module.fail_json(msg=f"{path}: state link needs src")
    if os.path.islink(path) and os.readlink(path) == src:
        return False
    if os.path.isdir(path) and not os.path.islink(path):
        module.fail_json(msg=f"{path} is a directory; refusing to replace it with a link")
    if module.check_mode:
        return True
    temporary = os.path.join(os.path.dirname(path), f".criops-link-{os.getpid()}-{os.path.basename(path)}")
    if os.path.lexists(temporary):
        os.unlink(temporary)
    os.symlink(src, temporary)
    os.replace(temporary, path)
    return True


def _ensure_absent(module, entry, diffs):
    """A file or link removed; a directory is never taken for one."""
    path = entry["path"]
    if not os.path.lexists(path):
        return False
    if os.path.isdir(path) and not os.path.islink(path):
        module.fail_json(msg=f"{path} is a directory; state absent removes only files and links")
    if module._diff:
        diffs.append({"before_header": path, "after_header": path, "before": "(present)\n", "after": "(absent)\n"})
    if not module.check_mode:
        os.unlink(path)
    return True


def main():
    module = AnsibleModule(
        argument_spec={
            "paths": {
                "type": "list",
                "elements": "dict",
                "required": True,
                "options": {
                    "path": {"type": "path", "required": True},
                    "state": {"type": "str", "required": True, "choices": ["directory", "file", "link", "absent"]},
                    "content": {"type": "str", "no_log": False},
                    "sha256": {"type": "str"},
                    "src": {"type": "path"},
                    "mode": {"type": "raw"},
                    "validate": {"type": "str"},
                    "backup": {"type": "bool", "default": False},
                },
            },
            "owner": {"type": "str"},
            "group": {"type": "str"},
        },
        supports_check_mode=True,
    )
    owner, group = module.params["owner"], module.params["group"]
    changed_paths, diffs, backups, differs = [], [], {}, []
    for entry in module.params["paths"]:
        if not os.path.isabs(entry["path"]):
            module.fail_json(msg=f"{entry['path']} is not an absolute path", changed_paths=changed_paths)
        if entry["state"] == "directory":
            changed = _ensure_directory(module, entry, owner, group)
        elif entry["state"] == "file" and entry.get("sha256") is not None and entry.get("content") is None:
            changed = _check_file(module, entry, owner, group, differs)
        elif entry["state"] == "file":
            changed = _ensure_file(module, entry, owner, group, diffs, backups)
        elif entry["state"] == "link":
            changed = _ensure_link(module, entry)
        else:
            changed = _ensure_absent(module, entry, diffs)
        if changed:
            changed_paths.append(entry["path"])
    result = {"changed": bool(changed_paths), "changed_paths": changed_paths, "backups": backups, "differs": differs}
    if module._diff:
        result["diff"] = diffs
    module.exit_json(**result)


if __name__ == "__main__":
    main()
