#!/usr/bin/env bash
# Private local Redis for skewless: `redis.sh install|up|down|status|forget`.
# up:   reuse the configured Redis (SKEWLESS_REDIS_CONNECTION) or the private one in
#       .state/redis; otherwise install redis-server if missing (root only) and start a
#       daemon on a free port. Writes .state/env for later make targets and bare feast.
# down: stop the private instance (never one we did not start).
# forget: after `make data` replaced the dataset, drop the default registry file (its record of
#       materialized windows) and empty the private instance, running or on disk.
set -euo pipefail
ROOT="$(cd "$(dirname "$0")/../.." && pwd)"
STATE="$ROOT/.state"
RDIR="$STATE/redis"
ENVF="$STATE/env"
mkdir -p "$RDIR"

absolute() {  # $1 made absolute against the working directory, as the Python settings make it
  python3 -c 'import os, sys; print(os.path.abspath(sys.argv[1]))' "$1"
}

configured() {  # the exported connection, unless it is a private instance's that a shell sourced from .state/env
  local conn="${SKEWLESS_REDIS_CONNECTION:-}"
  [[ -n "$conn" && "$conn" != "${SKEWLESS_STATE_PRIVATE_REDIS:-}" ]] && echo "$conn"
  return 0
}

write_env() {  # $1 = host:port[,options]; $2 = "private" for our own instance
  # An exported data dir or registry is kept (made absolute, as the Python settings resolve it),
  # since `make` targets load this file over the environment.
  local data="${SKEWLESS_DATA_DIR:-$ROOT/data}" registry="${SKEWLESS_FEAST_REGISTRY:-$ROOT/data/registry.db}"
  local type=file
  data="$(absolute "$data")"
  if [[ "$registry" == *://* ]]; then type=sql; else registry="$(absolute "$registry")"; fi
  cat > "$ENVF" <<EOT
# Written by infra/local/redis.sh. Source with: set -a; . .state/env; set +a
SKEWLESS_REDIS_CONNECTION=$1
SKEWLESS_FEAST_CONNECTION=$1,socket_timeout=5,socket_connect_timeout=2
SKEWLESS_FEAST_REGISTRY=$registry
SKEWLESS_FEAST_REGISTRY_TYPE=$type
SKEWLESS_DATA_DIR=$data
# Set only for the private instance: a shell that sourced this file exports it too, so \`up\` can
# tell that address from one the user chose.
SKEWLESS_STATE_PRIVATE_REDIS=$([[ "${2:-}" == private ]] && echo "$1")
EOT
}

private_alive() {
  [[ -f "$RDIR/redis.pid" && -f "$RDIR/port" ]] || return 1
  kill -0 "$(cat "$RDIR/redis.pid")" 2>/dev/null || return 1
  redis-cli -p "$(cat "$RDIR/port")" ping >/dev/null 2>&1
}

ensure_installed() {
  command -v redis-server >/dev/null && return 0
  if [[ "$(id -u)" == 0 ]] && command -v apt-get >/dev/null; then
    echo "redis-server not found: installing the Debian package" >&2
    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq redis-server >/dev/null
    # The package may start a system instance; we never use it implicitly.
  else
    echo "error: redis-server is not installed. Install it (Debian/Ubuntu: sudo apt-get install redis-server," >&2
    echo "macOS: brew install redis) or point SKEWLESS_REDIS_CONNECTION at a running Redis." >&2
    exit 1
  fi
}

free_port() {
  python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'
}

case "${1:-up}" in
  install)
    ensure_installed
    ;;
  up)
    # An exported connection wins, unless it is a private instance's address that a shell picked
    # up by sourcing .state/env (that instance may have stopped, or moved to another port, since).
    if [[ -n "$(configured)" ]]; then
      echo "using configured Redis at ${SKEWLESS_REDIS_CONNECTION%%,*}"
      write_env "${SKEWLESS_REDIS_CONNECTION}"
      exit 0
    fi
    if private_alive; then
      echo "private Redis already running on 127.0.0.1:$(cat "$RDIR/port")"
      write_env "127.0.0.1:$(cat "$RDIR/port")" private
      exit 0
    fi
    ensure_installed
    port="$(free_port)"
    redis-server --daemonize yes --bind 127.0.0.1 --port "$port" --dir "$RDIR" \
      --pidfile "$RDIR/redis.pid" --logfile "$RDIR/redis.log" \
      --save "300 1" --appendonly no --protected-mode yes >/dev/null
    for _ in $(seq 50); do redis-cli -p "$port" ping >/dev/null 2>&1 && break; sleep 0.1; done
    redis-cli -p "$port" ping >/dev/null || { echo "error: Redis did not start, see $RDIR/redis.log" >&2; exit 1; }
    echo "$port" > "$RDIR/port"
    write_env "127.0.0.1:$port" private
    echo "started private Redis on 127.0.0.1:$port (data in .state/redis)"
    ;;
  down)
    if private_alive; then
      redis-cli -p "$(cat "$RDIR/port")" shutdown nosave >/dev/null 2>&1 || kill "$(cat "$RDIR/redis.pid")"
      echo "stopped private Redis on port $(cat "$RDIR/port")"
    else
      echo "no private Redis running"
    fi
    rm -f "$RDIR/port" "$RDIR/redis.pid" "$ENVF"
    ;;
  status)
    if private_alive; then echo "private Redis on 127.0.0.1:$(cat "$RDIR/port")"; else echo "no private Redis"; fi
    ;;
  forget)
    # `make data` replaced the dataset. Materialization writes a row only when it is newer than
    # the stored one, from where the registry's record says the last run ended, so values of the
    # old dataset would stay and most of the new one would never be written. So the default
    # registry file (the record) goes, and the private store is emptied (running or on disk). A
    # registry or a Redis the user configured is never touched, only named.
    registry="${SKEWLESS_FEAST_REGISTRY:-$ROOT/data/registry.db}"
    if [[ "$registry" != *://* && "$(absolute "$registry")" == "$ROOT/data/registry.db" ]]; then
      rm -f "$ROOT/data/registry.db"
    else
      echo "note: the Feast registry at $registry still records how far the previous dataset was" \
        "materialized; recreate it (feast teardown, then make apply) before materializing the new one" >&2
    fi
    conn="$(configured)"
    if [[ -n "$conn" ]]; then
      echo "note: the online store at ${conn%%,*} still holds the previous dataset's values; clear this" \
        "project's keys there before materializing the new one" >&2
    elif private_alive; then
      port="$(cat "$RDIR/port")"
      if ! redis-cli -p "$port" flushall >/dev/null || ! redis-cli -p "$port" save >/dev/null; then
        echo "error: could not empty the private Redis on 127.0.0.1:$port" >&2
        exit 1
      fi
      echo "emptied the private Redis on 127.0.0.1:$port (it held the previous dataset)"
    else
      rm -f "$RDIR/dump.rdb"
    fi
    ;;
  *) echo "usage: $0 install|up|down|status|forget" >&2; exit 2 ;;
esac
