#!/usr/bin/env bash
# The criops demo on this machine: a fresh local test host (a Debian 12 systemd
# container) provisioned by site.yml and proven by validate.yml, which ends with
# the critest table per runtime handler. Reports land in artifacts/critest/.
. "$(dirname "$0")/lib.sh"
cd "$CRIOPS_ROOT"
export ANSIBLE_CONFIG="$CRIOPS_ROOT/ansible.cfg"
PATH="$CRIOPS_ROOT/.venv/bin:$PATH"

suite=${1:-bookworm}
hack/local-host.sh down
hack/local-host.sh up "$suite"
log "provisioning criops-local with playbooks/site.yml"
ansible-playbook -i inventory/local/hosts.yml playbooks/site.yml
log "validating criops-local with playbooks/validate.yml"
ansible-playbook -i inventory/local/hosts.yml playbooks/validate.yml
log "critest results of criops-local (reports in artifacts/critest/criops-local/):"
python3 hack/critest-tables.py artifacts/critest
log "the host stays up for exploring: podman exec -it criops-local crictl ps -a; remove it with hack/local-host.sh down"
