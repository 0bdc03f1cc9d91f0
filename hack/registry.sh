#!/usr/bin/env bash
# Local image registry for air-gapped tests: Debian's docker-registry
# (distribution 2.8) on $REGISTRY_ADDR only, storage in the cache so pushed
# images survive between runs. Started as a plain detached process, not the
# Debian systemd unit: CI machines and containers may have no systemd, and that
# unit's config listens on every address with auth.
#   hack/registry.sh         start it unless something already serves /v2/
#   hack/registry.sh stop    stop the one this script started
. "$(dirname "$0")/lib.sh"

url="http://$REGISTRY_ADDR/v2/"
storage="$CRIOPS_CACHE/registry"
config="$CRIOPS_CACHE/registry.yml"
logfile="$CRIOPS_CACHE/registry.log"
pidfile="$CRIOPS_CACHE/registry.pid"

answers() { curl -fsS -o /dev/null --max-time 2 "$url" 2>/dev/null; }

# The pid from the pid file, only if that process is still our registry: a stale
# pid may since have been given to an unrelated process.
our_pid() {
  local pid
  pid=$(cat "$pidfile" 2>/dev/null) && [[ $pid =~ ^[0-9]+$ ]] || return 1
  [[ $(tr '\0' ' ' 2>/dev/null <"/proc/$pid/cmdline") == *docker-registry*"$config"* ]] || return 1
  echo "$pid"
}

stop() {
  local pid
  if ! pid=$(our_pid); then
    rm -f "$pidfile"
    answers && die "$url is served by a process this script did not start; not stopping it"
    log "registry is not running"
    return
  fi
  kill "$pid"
  for _ in $(seq 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
  kill -0 "$pid" 2>/dev/null && kill -KILL "$pid"
  rm -f "$pidfile"
  log "registry stopped (pid $pid)"
}

start() {
  if answers; then
    log "registry already serves $url"
    return
  fi
  command -v docker-registry >/dev/null || die "docker-registry not found (apt-get install docker-registry)"
  # A leftover registry of ours that does not answer is hung: replace it.
  our_pid >/dev/null && stop
  mkdir -p "$storage"
  # Written every start so a changed address or cache path takes effect.
  # Deletion is enabled so tests can remove tags; no auth, no TLS: loopback only.
  cat >"$config" <<EOF
version: 0.1
log:
  level: info
storage:
  filesystem:
    rootdirectory: $storage
  delete:
    enabled: true
http:
  addr: $REGISTRY_ADDR
EOF
  # setsid + nohup: its own session, so it outlives this script, the terminal and
  # the CI step that started it. Without job control $! is the registry itself.
  # Descriptors the caller holds open (a build lock) are closed first: the
  # registry would otherwise hold them for as long as it runs.
  (
    for fd in /proc/$BASHPID/fd/*; do
      fd=${fd##*/}
      ((fd > 2)) && eval "exec $fd>&-"
    done
    exec setsid nohup docker-registry serve "$config" >"$logfile" 2>&1 </dev/null
  ) &
  local pid=$!
  echo "$pid" >"$pidfile"
  for _ in $(seq 50); do
    if answers; then
      log "registry serves $url (pid $pid, storage $storage)"
      return
    fi
    kill -0 "$pid" 2>/dev/null || break
    sleep 0.2
  done
  rm -f "$pidfile"
  tail -n 20 "$logfile" >&2 || true
  kill -0 "$pid" 2>/dev/null || die "docker-registry exited at start (log: $logfile)"
  kill "$pid"
  die "docker-registry did not answer at $url within 10 s; killed it (log: $logfile)"
}

case "${1:-start}" in
  start) start ;;
  stop) stop ;;
  *) die "usage: $0 [start|stop]" ;;
esac
