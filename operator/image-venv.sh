#!/bin/sh
# The operator image's virtualenv: only what the operator runs.
#   image-venv.sh <venv dir> <requirements.txt>
# - ansible-core, not the `ansible` package: that release bundles some 470 MB of
#   collections, and criops' roles use two of them (community.general for
#   modprobe, ansible.posix for sysctl). Those two are taken from the wheel of
#   the pinned `ansible` release, so their versions are the lock file's too.
# - kubernetes without kubernetes/aio, its asyncio client (68 MB): the operator
#   uses the synchronous client, and kopf talks to the API with aiohttp.
# - no ansible-test (ansible-core's test runner for collection developers), no
#   pip or setuptools: nothing is tested or installed in the image.
set -eu
venv=$1 lock=$2
python3 -m venv "$venv"
pip="$venv/bin/pip --no-cache-dir --disable-pip-version-check"
$pip install -c "$lock" ansible-core ansible-runner kopf kubernetes
wheels=$(mktemp -d)
$pip download --no-deps --only-binary :all: -c "$lock" -d "$wheels" ansible
site=$("$venv/bin/python" -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')
"$venv/bin/python" - "$wheels"/ansible-*.whl "$site" <<'PY'
import sys
import zipfile

COLLECTIONS = ("ansible_collections/community/general/", "ansible_collections/ansible/posix/")
with zipfile.ZipFile(sys.argv[1]) as wheel:
    members = [name for name in wheel.namelist() if name.startswith(COLLECTIONS)]
    if not all(any(name.startswith(prefix) for name in members) for prefix in COLLECTIONS):
        sys.exit(f"{sys.argv[1]} lacks one of {COLLECTIONS}")
    wheel.extractall(sys.argv[2], members)
PY
rm -rf "$wheels" "$site/kubernetes/aio" "$site/ansible_test" "$venv/bin/ansible-test"
"$venv/bin/python" -m compileall -q "$site/ansible_collections" >/dev/null
$pip uninstall -y pip setuptools >/dev/null
