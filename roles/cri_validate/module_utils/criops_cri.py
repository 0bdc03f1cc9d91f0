"""What cri_validate's modules share: crictl as argv, and a step's failure in a line."""

from __future__ import annotations


def last_line(*texts):
    """The last non-empty line of the first text that has one: a command's own last words."""
    for text in texts:
        lines = [line.strip() for line in (text or "").splitlines() if line.strip()]
        if lines:
            return lines[-1]
    return ""


def handler_configs(info):
    """containerd's runtime handler configs from `crictl info` (decoded); other runtimes list none."""
    return ((info.get("config") or {}).get("containerd") or {}).get("runtimes") or {}


def run(module, argv):
    """(rc, stdout, stderr) of a command; one that cannot start is rc 127 with the reason, not a failed module."""
    try:
        return module.run_command(argv, handle_exceptions=False)
    except OSError as error:
        return 127, "", f"{argv[0]}: {error.strerror}"


class Crictl:
    """crictl against one endpoint (runtime and image service alike), each call an argv."""

    def __init__(self, module, binary, endpoint):
        self.module = module
        self.base = [binary, "--runtime-endpoint", endpoint, "--image-endpoint", endpoint]

    def run(self, *args):
        """(rc, stdout, stderr) of one call."""
        return run(self.module, [*self.base, *args])

    def must(self, step, *args):
        """stdout of a call that must succeed; else `step: <its last line>` raises StepFailed."""
        rc, out, err = self.run(*args)
        if rc != 0:
            raise StepFailed(f"{step}: {last_line(err, out) or f'exited {rc}'}")
        return out.strip()


class StepFailed(Exception):
    """A step of the node-side work failed; the text says which and why."""
