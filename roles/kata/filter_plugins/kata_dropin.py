"""The Kata handler as a containerd drop-in that containerd 1.x really merges.

containerd 1.6/1.7 merge imported files per plugin section, not per key: a
drop-in holding only [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.kata]
would replace the whole CRI plugin config (runc and crun gone, CRI not
loaded). So the drop-in carries the CRI section of config.toml as it is, plus
the kata runtime. site.yml renders it after the containerd role on every run,
so it follows config.toml; removing the drop-in restores config.toml's own.
"""

from __future__ import annotations

import copy
import importlib.util
from pathlib import Path
from typing import Any

CRI_PLUGIN = "io.containerd.grpc.v1.cri"

# One TOML writer for criops: the containerd role's.
_spec = importlib.util.spec_from_file_location(
    "criops_containerd_config",
    Path(__file__).resolve().parents[2] / "containerd" / "filter_plugins" / "containerd_config.py",
)
_containerd_config = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(_containerd_config)


def kata_cri_dropin(config_text: str, handler: str, runtime: dict[str, Any], source: str = "config.toml") -> str:
    """TOML for a drop-in: config.toml's CRI plugin section with `handler` added.

    config.toml text that is empty, not TOML or without runtime handlers is
    refused: the drop-in would then hold `handler` alone and take the others away.
    """
    lost = f"the {handler} drop-in replaces containerd's CRI section and would drop runc, crun and every other handler"
    config = _containerd_config.parse_config(config_text, source, lost)
    if not _containerd_config.cri_runtimes(config):
        raise _containerd_config.UnusableConfig(
            f"{source} names no runtime handler in its CRI section "
            f'(plugins."{CRI_PLUGIN}".containerd.runtimes): {lost}; '
            "write it with the containerd role first"
        )
    cri = copy.deepcopy(config["plugins"][CRI_PLUGIN])
    cri["containerd"]["runtimes"][handler] = runtime
    return "version = 2\n\n" + _containerd_config.to_toml_tables(cri, f'plugins."{CRI_PLUGIN}"') + "\n"


class FilterModule:
    def filters(self) -> dict[str, Any]:
        return {"kata_cri_dropin": kata_cri_dropin}
