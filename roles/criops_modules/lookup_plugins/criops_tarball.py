"""An uncompressed tar of controller files, built once per content in a cache directory."""

from __future__ import annotations

import hashlib
import json
import os
import tarfile
import tempfile

from ansible.errors import AnsibleError
from ansible.plugins.lookup import LookupBase

DOCUMENTATION = r"""
name: criops_tarball
short_description: one tar of controller files, cached by their content
description:
  - Returns the path of an uncompressed tar holding each file named, under its base name,
    mode 0755, owned by root. The tar is named by the files' sha256 given in O(digests)
    (as criops_sha256 computes them), so a cached tar is reused exactly while the files
    are the same; it is written beside its final name and renamed, so runs at once
    never see half of one.
  - One transfer and one unpack send many large binaries to a node in a fraction of
    the time a copy per file takes (a stat, a transfer and a module run each).
options:
  _terms:
    description: Paths of files on the controller.
    required: true
  digests:
    description: The sha256 of each file, in the same order.
    type: list
    required: true
  cache_dir:
    description: Directory on the controller the tar is kept in.
    type: path
    required: true
  prefix:
    description: Start of the tar's file name.
    type: str
    default: files
"""


def tarball_name(prefix, terms, digests):
    """`<prefix>-<16 hex>.tar`, the hex of the members' names and sha256."""
    members = [[os.path.basename(term), digest] for term, digest in zip(terms, digests, strict=True)]
    return f"{prefix}-{hashlib.sha256(json.dumps(members).encode()).hexdigest()[:16]}.tar"


def write_tarball(path, terms):
    """Write the tar of `terms` at `path` through a temporary file in the same directory."""
    handle, partial = tempfile.mkstemp(prefix=".partial-", dir=os.path.dirname(path))
    try:
        with os.fdopen(handle, "wb") as raw, tarfile.open(fileobj=raw, mode="w", format=tarfile.GNU_FORMAT) as archive:
            for term in terms:
                info = archive.gettarinfo(term, arcname=os.path.basename(term))
                info.mode, info.uid, info.gid, info.uname, info.gname = 0o755, 0, 0, "root", "root"
                with open(term, "rb") as member:
                    archive.addfile(info, member)
        os.chmod(partial, 0o644)
        os.replace(partial, path)
    except BaseException:
        os.unlink(partial)
        raise


class LookupModule(LookupBase):
    def run(self, terms, variables=None, **kwargs):
        self.set_options(var_options=variables, direct=kwargs)
        digests = self.get_option("digests")
        if len(digests) != len(terms):
            raise AnsibleError(f"criops_tarball: {len(terms)} files but {len(digests)} digests")
        cache_dir = self.get_option("cache_dir")
        path = os.path.join(cache_dir, tarball_name(self.get_option("prefix"), terms, digests))
        if not os.path.exists(path):
            try:
                os.makedirs(cache_dir, exist_ok=True)
                write_tarball(path, terms)
            except OSError as error:
                raise AnsibleError(f"criops_tarball: cannot write {path}: {error}") from error
        return [path]
