"""sha256 of files on the controller, hashed in the controller's own process."""

from __future__ import annotations

import hashlib

from ansible.errors import AnsibleError
from ansible.plugins.lookup import LookupBase

DOCUMENTATION = r"""
name: criops_sha256
short_description: sha256 of controller files
description:
  - Returns the hex sha256 of each file named, read on the controller. Unlike a stat
    delegated to localhost it starts no module process, so a role can compare large local
    artifacts with what a node holds on every run for the price of reading them.
options:
  _terms:
    description: Paths of files on the controller.
    required: true
"""


class LookupModule(LookupBase):
    def run(self, terms, variables=None, **kwargs):
        digests = []
        for term in terms:
            digest = hashlib.sha256()
            try:
                with open(term, "rb") as handle:
                    for block in iter(lambda: handle.read(1 << 20), b""):
                        digest.update(block)
            except OSError as error:
                raise AnsibleError(f"cannot hash {term}: {error}") from error
            digests.append(digest.hexdigest())
        return digests
