# Start and stop what the integration tests and the demo need: a private dockerd, a local
# OCI registry on 127.0.0.1 and a PostgreSQL server on a unix socket. Sourced by
# scripts/test.sh, scripts/demo.sh and scripts/bench.sh. Everything lives under
# $BAKE_SERVICES (default .bake/services), PostgreSQL's data in a folder of its own user
# under /tmp; all is stopped by PID.

BAKE_SERVICES=${BAKE_SERVICES:-$PWD/.bake/services}
BAKE_REGISTRY_PORT=${BAKE_REGISTRY_PORT:-5000}

docker_answers() {
  docker version --format '{{.Server.Version}}' >/dev/null 2>&1
}

start_dockerd() {
  if [ -n "${DOCKER_HOST:-}" ] && docker_answers; then
    echo "services: using the Docker engine at $DOCKER_HOST"
    return 0
  fi
  if [ -z "${DOCKER_HOST:-}" ] && [ -S /var/run/docker.sock ] && docker_answers; then
    echo "services: using the Docker engine at /var/run/docker.sock"
    return 0
  fi
  local d=$BAKE_SERVICES/dockerd
  mkdir -p "$d"
  export DOCKER_HOST="unix://$d/docker.sock"
  if [ -f "$d/docker.pid" ] && kill -0 "$(cat "$d/docker.pid")" 2>/dev/null && docker_answers; then
    echo "services: dockerd already running (pid $(cat "$d/docker.pid"))"
    return 0
  fi
  dockerd -H "$DOCKER_HOST" --data-root "$d/data" --exec-root "$d/exec" \
    --pidfile "$d/docker.pid" --insecure-registry "127.0.0.1:$BAKE_REGISTRY_PORT" \
    >"$d/dockerd.log" 2>&1 &
  echo $! >"$d/started.pid"
  for _ in $(seq 1 60); do
    docker_answers && { echo "services: dockerd started (pid $(cat "$d/started.pid"), $DOCKER_HOST)"; return 0; }
    sleep 0.5
  done
  echo "services: dockerd did not start; last log lines:" >&2
  tail -20 "$d/dockerd.log" >&2
  return 1
}

start_registry() {
  local d=$BAKE_SERVICES/registry
  mkdir -p "$d/data"
  if [ -f "$d/registry.pid" ] && kill -0 "$(cat "$d/registry.pid")" 2>/dev/null; then
    echo "services: registry already running on 127.0.0.1:$BAKE_REGISTRY_PORT"
    return 0
  fi
  cat >"$d/config.yml" <<YAML
version: 0.1
log: {level: warn}
storage:
  filesystem: {rootdirectory: $d/data}
  delete: {enabled: true}
http:
  addr: 127.0.0.1:$BAKE_REGISTRY_PORT
YAML
  docker-registry serve "$d/config.yml" >"$d/registry.log" 2>&1 &
  echo $! >"$d/registry.pid"
  for _ in $(seq 1 40); do
    curl -fsS "http://127.0.0.1:$BAKE_REGISTRY_PORT/v2/" >/dev/null 2>&1 && {
      echo "services: registry on 127.0.0.1:$BAKE_REGISTRY_PORT (pid $(cat "$d/registry.pid"))"
      export BAKE_TEST_REGISTRY="127.0.0.1:$BAKE_REGISTRY_PORT"
      return 0
    }
    sleep 0.25
  done
  echo "services: registry did not start" >&2
  tail -20 "$d/registry.log" >&2
  return 1
}

start_postgres() {
  local bin
  bin=$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -1)
  [ -n "$bin" ] || { echo "services: PostgreSQL is not installed" >&2; return 1; }
  mkdir -p "$BAKE_SERVICES"
  # the server runs as the `postgres` user, which cannot enter a private checkout: its data
  # and socket live in a folder of its own (short: unix socket paths are limited to 107 bytes)
  local d
  d=$(mktemp -d /tmp/bake-pg.XXXXXX)
  chown postgres: "$d"
  echo "$d" >"$BAKE_SERVICES/postgres.dir"
  runuser -u postgres -- "$bin/initdb" -D "$d/data" -A trust -U postgres -E UTF8 --locale=C.UTF-8 >"$d/initdb.log" 2>&1 || {
    echo "services: initdb failed" >&2; tail -20 "$d/initdb.log" >&2; return 1; }
  runuser -u postgres -- "$bin/pg_ctl" -D "$d/data" -l "$d/postgres.log" -w -t 60 \
    -o "-c listen_addresses='' -k $d -c fsync=off" start >/dev/null || {
    echo "services: PostgreSQL did not start" >&2; tail -20 "$d/postgres.log" >&2; return 1; }
  export BAKE_TEST_PG="postgresql:///postgres?host=$d&user=postgres"
  echo "services: PostgreSQL on $d (pid $(head -1 "$d/data/postmaster.pid"))"
}

stop_postgres() {
  local f=$BAKE_SERVICES/postgres.dir
  [ -f "$f" ] || return 0
  local d bin
  d=$(cat "$f")
  bin=$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -1)
  if [ -f "$d/data/postmaster.pid" ]; then
    runuser -u postgres -- "$bin/pg_ctl" -D "$d/data" -m fast -w stop >/dev/null 2>&1 ||
      kill -9 "$(head -1 "$d/data/postmaster.pid")" 2>/dev/null || true
  fi
  rm -rf "$d" "$f"
}

stop_pidfile() {
  local f=$1
  [ -f "$f" ] || return 0
  local pid
  pid=$(cat "$f")
  if kill -0 "$pid" 2>/dev/null; then
    kill "$pid" 2>/dev/null || true
    for _ in $(seq 1 40); do kill -0 "$pid" 2>/dev/null || break; sleep 0.25; done
    kill -9 "$pid" 2>/dev/null || true
  fi
  rm -f "$f"
}

stop_services() {
  stop_postgres
  stop_pidfile "$BAKE_SERVICES/registry/registry.pid"
  stop_pidfile "$BAKE_SERVICES/dockerd/started.pid"
}
