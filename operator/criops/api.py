"""The RuntimeNode API as the operator serves it: group, version, plural, kind and
the names criops writes on RuntimeNode objects. crds/runtimenodes.yaml is the schema."""

from __future__ import annotations

GROUP = "criops.dev"
VERSION = "v1alpha1"
PLURAL = "runtimenodes"
KIND = "RuntimeNode"
API_VERSION = f"{GROUP}/{VERSION}"

# kopf's finalizer on each RuntimeNode: the Node is cleaned up before the object goes.
FINALIZER = f"{GROUP}/node-cleanup"
# The annotation kopf keeps the last handled spec in (prefix/key).
DIFFBASE_PREFIX = GROUP
DIFFBASE_KEY = "last-handled-configuration"
