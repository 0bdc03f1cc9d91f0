"""sha256 of files on the controller, hashed in the controller's own process."""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
import time

from ansible.errors import AnsibleError
from ansible.plugins.lookup import LookupBase

DOCUMENTATION = r"""
name: criops_sha256
short_description: sha256 of controller files
description:
  - Returns the hex sha256 of each file named, read on the controller. Unlike a stat
    delegated to localhost it starts no module process, so a role can compare large local
    artifacts with what a node holds on every run for the price of reading them.
  - With O(cache_dir), a file's digest is kept there with its device, inode, size and
    change times, and reused while all of them are the same; any write or replacement
    changes the inode change time, which no program can set back. A file changed less than
    two seconds before it was hashed is not kept (a write in the same clock tick would
    leave its times unchanged), so it is hashed again next time.
options:
  _terms:
    description: Paths of files on the controller.
    required: true
  cache_dir:
    description: Optional controller directory for the digests; without it every file is read.
    type: path
"""

_CACHE_FILE = "criops-sha256.json"
# A file whose inode changed this recently may still be written within the same tick.
_SETTLED_NS = 2_000_000_000


def _stat_key(status: os.stat_result) -> list[int]:
    return [status.st_dev, status.st_ino, status.st_size, status.st_mtime_ns, status.st_ctime_ns]


def _read_cache(path: str) -> dict[str, dict[str, object]]:
    try:
        with open(path, encoding="utf-8") as handle:
            data = json.load(handle)
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


def _write_cache(cache_dir: str, path: str, data: dict[str, dict[str, object]]) -> None:
    """Written beside its final name and renamed: runs at once never read half of it."""
    os.makedirs(cache_dir, exist_ok=True)
    handle, partial = tempfile.mkstemp(prefix=".partial-", dir=cache_dir)
    try:
        with os.fdopen(handle, "w", encoding="utf-8") as out:
            json.dump(data, out)
        os.replace(partial, path)
    except BaseException:
        os.unlink(partial)
        raise


def sha256_file(path: str) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def sha256_files(terms: list[str], cache_dir: str | None = None) -> list[str]:
    """The sha256 of each file, through the digests kept in `cache_dir` when given."""
    cache_path = os.path.join(cache_dir, _CACHE_FILE) if cache_dir else None
    cache = _read_cache(cache_path) if cache_path else {}
    updated = False
    digests = []
    for term in terms:
        name = os.path.realpath(term)
        key = _stat_key(os.stat(name))
        entry = cache.get(name)
        if isinstance(entry, dict) and entry.get("stat") == key:
            digests.append(str(entry["sha256"]))
            continue
        digest = sha256_file(name)
        digests.append(digest)
        # Unchanged while it was read, and settled: safe to know again by its times.
        after = os.stat(name)
        if cache_path and _stat_key(after) == key and time.time_ns() - after.st_ctime_ns > _SETTLED_NS:
            cache[name] = {"stat": key, "sha256": digest}
            updated = True
    if cache_dir and cache_path and updated:
        _write_cache(cache_dir, cache_path, {name: entry for name, entry in cache.items() if os.path.exists(name)})
    return digests


class LookupModule(LookupBase):
    def run(self, terms, variables=None, **kwargs):
        self.set_options(var_options=variables, direct=kwargs)
        try:
            return sha256_files(terms, self.get_option("cache_dir"))
        except OSError as error:
            raise AnsibleError(f"criops_sha256: {error}") from error
