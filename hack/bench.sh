#!/usr/bin/env bash
# Wall-time benchmarks of the Ansible side, per test-host platform:
#   fresh converge (site.yml on a new host), idempotent re-run, validate.yml.
# Prints a Markdown table; docs/benchmarks.md records the figures. Not a test:
# nothing here passes or fails on time.
. "$(dirname "$0")/lib.sh"
cd "$CRIOPS_ROOT"
export ANSIBLE_CONFIG="$CRIOPS_ROOT/ansible.cfg"
PATH="$CRIOPS_ROOT/.venv/bin:$PATH"

suites=${BENCH_SUITES:-$TEST_HOST_SUITES}
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
ln -s "$CRIOPS_ROOT/inventory/local/group_vars" "$work/group_vars"
export CRIOPS_ROOT CRIOPS_REPORT_DIR="$work/reports"

seconds() { local start=$EPOCHREALTIME; "$@" >"$work/last.log" 2>&1 || { tail -30 "$work/last.log" >&2; die "failed: $*"; }; echo "$EPOCHREALTIME - $start" | bc; }

rows=()
for suite in $suites; do
  host="criops-bench-$suite"
  CRIOPS_LOCAL_HOST=$host hack/local-host.sh down
  boot=$(seconds env CRIOPS_LOCAL_HOST="$host" hack/local-host.sh up "$suite")
  # Reached over SSH like a real node (the loopback port podman picked).
  port=$(podman port "$host" 22/tcp | head -1 | sed 's/.*://')
  printf 'all:\n  children:\n    cri_nodes:\n      children:\n        containerd:\n          hosts:\n            %s:\n              ansible_host: 127.0.0.1\n              ansible_port: %s\n' \
    "$host" "$port" >"$work/hosts.yml"
  fresh=$(seconds ansible-playbook -i "$work/hosts.yml" playbooks/site.yml)
  again=$(seconds ansible-playbook -i "$work/hosts.yml" playbooks/site.yml)
  grep -q 'changed=0' "$work/last.log" || log "warning: the re-run on $suite changed something"
  smoke=$(seconds ansible-playbook -i "$work/hosts.yml" playbooks/validate.yml -e '{"cri_validate_critest_enabled": false}')
  full=$(seconds ansible-playbook -i "$work/hosts.yml" playbooks/validate.yml)
  CRIOPS_LOCAL_HOST=$host hack/local-host.sh down
  rows+=("$(printf '| %s | %.1f | %.1f | %.1f | %.1f | %.1f |' "$suite" "$boot" "$fresh" "$again" "$smoke" "$full")")
done

echo "| platform | host boot (s) | fresh converge (s) | idempotent re-run (s) | validate, probe + smoke only (s) | validate, full: runc + crun critest (s) |"
echo "| --- | ---: | ---: | ---: | ---: | ---: |"
printf '%s\n' "${rows[@]}"
