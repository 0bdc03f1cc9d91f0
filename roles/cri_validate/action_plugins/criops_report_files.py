"""Report files on the controller, written in the controller's own process."""

from __future__ import annotations

import json
import os

from ansible.errors import AnsibleActionFail
from ansible.plugins.action import ActionBase

DOCUMENTATION = r"""
action: criops_report_files
short_description: Write report files on the controller without a module process
description:
  - Writes each file of O(files) under O(dir) on the controller, making directories as
    needed (mode 0755, files 0644). Unlike a copy delegated to localhost it starts no module
    process, so a run's reports cost no round trip.
  - Text is written as it is; a dict or list as JSON the way C(to_nice_json) spells it, with a
    final newline; an entry whose content is null is skipped.
options:
  dir:
    description: Directory on the controller the names are relative to.
    type: path
    required: true
  files:
    description: Relative path to the whole content of the file (text, or data to write as JSON).
    type: dict
    required: true
"""


def as_text(content):
    """Text as it is; data as to_nice_json writes it, with a final newline."""
    if isinstance(content, (dict, list)):
        return json.dumps(content, indent=4, sort_keys=True, separators=(",", ": "), ensure_ascii=False) + "\n"
    return str(content)


def write_reports(base, files):
    """Write `files` (relative path -> text or data, None skipped) under `base`; the paths written."""
    written = []
    for name, content in files.items():
        if content is None:
            continue
        path = os.path.normpath(os.path.join(base, name))
        if os.path.isabs(name) or not path.startswith(os.path.normpath(base) + os.sep):
            raise ValueError(f"{name} is not a path below {base}")
        os.makedirs(os.path.dirname(path), mode=0o755, exist_ok=True)
        with open(path, "w") as handle:
            handle.write(as_text(content))
        os.chmod(path, 0o644)
        written.append(path)
    return written


class ActionModule(ActionBase):
    TRANSFERS_FILES = False
    _VALID_ARGS = frozenset(("dir", "files"))

    def run(self, tmp=None, task_vars=None):
        result = super().run(tmp, task_vars)
        args = self._task.args
        if not args.get("dir") or not isinstance(args.get("files"), dict):
            raise AnsibleActionFail("criops_report_files needs dir and a dict of files")
        try:
            result["written"] = write_reports(str(args["dir"]), dict(args["files"]))
        except (OSError, ValueError) as error:
            raise AnsibleActionFail(f"cannot write the reports under {args['dir']}: {error}") from error
        result["changed"] = False
        return result
