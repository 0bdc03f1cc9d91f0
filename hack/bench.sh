#!/usr/bin/env bash
# Wall-time benchmarks of the Ansible side, per test-host platform:
#   fresh converge (site.yml on a new host), no-change re-runs (BENCH_RERUNS of
#   them, 3 unless set: min and median, and the median's share of the fresh
#   converge), validate.yml (BENCH_VALIDATE=0 leaves it out).
# Then, when the peers' mirror is configured ($CRIOPS_PEERS_MIRROR,
# hack/peers.sh), criops side by side with kubespray's containerd role and
# geerlingguy.containerd on fresh identical test hosts, rounds interleaved
# (testworld/bench_peers.py: BENCH_PEER_ROUNDS, BENCH_PEER_RERUNS, on
# BENCH_PEER_SUITES, else the same suites; BENCH_PEERS=0 leaves it out).
# Prints Markdown tables; docs/benchmarks.md records the figures. Not a test:
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
  # Its own names beside other runs (the integration tests' prefix).
  host="${CRIOPS_TEST_HOST_PREFIX:-criops}-bench-$suite"
  CRIOPS_LOCAL_HOST=$host hack/local-host.sh down
  boot=$(seconds env CRIOPS_LOCAL_HOST="$host" hack/local-host.sh up "$suite")
  # Reached over SSH like a real node (the loopback port podman picked).
  port=$(podman port "$host" 22/tcp | head -1 | sed 's/.*://')
  printf 'all:\n  children:\n    cri_nodes:\n      children:\n        containerd:\n          hosts:\n            %s:\n              ansible_host: 127.0.0.1\n              ansible_port: %s\n' \
    "$host" "$port" >"$work/hosts.yml"
  fresh=$(seconds ansible-playbook -i "$work/hosts.yml" playbooks/site.yml)
  agains=()
  for _ in $(seq "${BENCH_RERUNS:-3}"); do
    agains+=("$(seconds ansible-playbook -i "$work/hosts.yml" playbooks/site.yml)")
    grep -q 'changed=0' "$work/last.log" || log "warning: a re-run on $suite changed something"
  done
  sorted=$(printf '%s\n' "${agains[@]}" | sort -n)
  again_min=$(head -1 <<<"$sorted")
  again_median=$(sed -n "$(((${#agains[@]} + 1) / 2))p" <<<"$sorted")
  share=$(echo "100 * $again_median / $fresh" | bc -l)
  smoke=nan full=nan
  if [[ ${BENCH_VALIDATE:-1} != 0 ]]; then
    smoke=$(seconds ansible-playbook -i "$work/hosts.yml" playbooks/validate.yml -e '{"cri_validate_critest_enabled": false}')
    full=$(seconds ansible-playbook -i "$work/hosts.yml" playbooks/validate.yml)
  fi
  CRIOPS_LOCAL_HOST=$host hack/local-host.sh down
  rows+=("$(printf '| %s | %.1f | %.1f | %.1f / %.1f | %.0f %% | %.1f | %.1f |' \
    "$suite" "$boot" "$fresh" "$again_min" "$again_median" "$share" "$smoke" "$full")")
done

echo "| platform | host boot (s) | fresh converge (s) | no-change re-run, min / median (s) | re-run / fresh | validate, probe + smoke only (s) | validate, full: runc + crun critest (s) |"
echo "| --- | ---: | ---: | ---: | ---: | ---: | ---: |"
printf '%s\n' "${rows[@]}"

[[ ${BENCH_PEERS:-1} != 0 ]] || exit 0
echo
if hack/peers.sh --mirror >/dev/null; then
  # shellcheck disable=SC2086 # a list of suites
  python -m testworld.bench_peers ${BENCH_PEER_SUITES:-$suites}
else
  echo "Side by side with kubespray and geerlingguy skipped: no mirror for their archives (CRIOPS_PEERS_MIRROR, docs/benchmarks.md); criops measured alone."
fi
