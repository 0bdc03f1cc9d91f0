#!/usr/bin/env bash
# Run molecule scenarios side by side, each on its own test hosts:
#   hack/molecule-scenarios.sh SCENARIO[@PLATFORM]...
# Each scenario's output goes to artifacts/molecule/<scenario>.log and is
# printed when it ends; the exit status is 1 when any scenario failed. Used by
# `make molecule` for the legacy runtimes, whose converges mostly wait on
# their hosts (apt, VM boots), so two share the machine's cores well.
. "$(dirname "$0")/lib.sh"

molecule="$CRIOPS_ROOT/.venv/bin/molecule"
logs="$CRIOPS_ROOT/artifacts/molecule"
mkdir -p "$logs"
declare -A pids
for spec in "$@"; do
  scenario=${spec%@*}
  args=(test -s "$scenario")
  [[ $spec == *@* ]] && args+=(--platform-name "${spec#*@}")
  log "molecule ${args[*]} (output: artifacts/molecule/$scenario.log)"
  (cd "$CRIOPS_ROOT" && "$molecule" "${args[@]}") >"$logs/$scenario.log" 2>&1 &
  pids[$scenario]=$!
done
failed=()
for scenario in "${!pids[@]}"; do
  wait "${pids[$scenario]}" || failed+=("$scenario")
  log "molecule scenario $scenario ended; its output:"
  cat "$logs/$scenario.log"
done
((${#failed[@]} == 0)) || die "molecule scenarios failed: ${failed[*]}"
