#!/usr/bin/env bash
# The criops demo on this machine: testworld/demo.py drives a fresh test host, a
# throwaway control plane and the operator; a RuntimeNode goes Ready with its
# critest table. Output and logs: artifacts/demo/.
. "$(dirname "$0")/lib.sh"
cd "$CRIOPS_ROOT"
export ANSIBLE_CONFIG="$CRIOPS_ROOT/ansible.cfg"
PATH="$CRIOPS_ROOT/.venv/bin:$PATH"
exec python3 -m testworld.demo
