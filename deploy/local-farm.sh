#!/usr/bin/env bash
# A local farm on loopback: nats-server (JetStream), etcd, a coordinator and two workers.
# Everything it writes (data, logs, pid files) is under one folder (default: farm/, git-ignored).
#   deploy/local-farm.sh start [DIR]   build, start, print the coordinator's address
#   deploy/local-farm.sh stop  [DIR]   stop exactly the processes recorded in DIR/pids
set -euo pipefail
cd "$(dirname "$0")/.."
action=${1:-start}
dir=${2:-farm}
NATS_PORT=${NATS_PORT:-14222}
ETCD_PORT=${ETCD_PORT:-12379}
ETCD_PEER_PORT=${ETCD_PEER_PORT:-12380}
COORDINATOR=${COORDINATOR:-127.0.0.1:7480}
DASHBOARD=${DASHBOARD:-127.0.0.1:7481}   # the coordinator's dashboard, /metrics and health
WORKER_METRICS_PORT=${WORKER_METRICS_PORT:-7482}   # worker n: /metrics and health on this + n - 1
WORKERS=${WORKERS:-2}
BUILD=${BUILD:-release}   # or debug

start_process() { # name, command...
  local name=$1; shift
  if [[ -f "$dir/pids/$name.pid" ]] && kill -0 "$(cat "$dir/pids/$name.pid")" 2>/dev/null; then
    echo "$name already running (pid $(cat "$dir/pids/$name.pid"))"; return
  fi
  nohup "$@" >"$dir/logs/$name.log" 2>&1 &
  echo $! >"$dir/pids/$name.pid"
}

wait_port() { # port, name
  for _ in $(seq 1 100); do
    if (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; then return 0; fi
    sleep 0.1
  done
  echo "$2 did not start; see $dir/logs/$2.log" >&2; return 1
}

case $action in
start)
  mkdir -p "$dir/pids" "$dir/logs" "$dir/nats" "$dir/etcd" "$dir/blobs" "$dir/scratch"
  if [[ -n ${SKIP_BUILD:-} ]]; then
    :
  elif [[ $BUILD == release ]]; then
    cargo build --release --quiet -p lathe-coordinator -p lathe-worker -p lathe-cli
  else
    cargo build --quiet -p lathe-coordinator -p lathe-worker -p lathe-cli
  fi
  start_process nats nats-server -js -a 127.0.0.1 -p "$NATS_PORT" -sd "$dir/nats"
  start_process etcd etcd --name lathe --data-dir "$dir/etcd" \
    --listen-client-urls "http://127.0.0.1:$ETCD_PORT" --advertise-client-urls "http://127.0.0.1:$ETCD_PORT" \
    --listen-peer-urls "http://127.0.0.1:$ETCD_PEER_PORT" --initial-advertise-peer-urls "http://127.0.0.1:$ETCD_PEER_PORT" \
    --initial-cluster "lathe=http://127.0.0.1:$ETCD_PEER_PORT" \
    --auto-compaction-mode revision --auto-compaction-retention 100000 --quota-backend-bytes 8589934592
  wait_port "$NATS_PORT" nats
  wait_port "$ETCD_PORT" etcd
  export LATHE_NATS="nats://127.0.0.1:$NATS_PORT"
  # The farm's CA, the coordinator's certificate and one per worker (kept across restarts).
  workers=()
  for n in $(seq 1 "$WORKERS"); do workers+=(--worker "worker-$n"); done
  "target/$BUILD/lathe-coordinator" certs --dir "$dir/tls" "${workers[@]}" >/dev/null
  # An admin token for `lathe` on this host, in a file only its owner reads.
  mkdir -p "$dir/secrets" && chmod 700 "$dir/secrets"
  if [[ ! -s "$dir/secrets/admin-token" ]]; then
    (umask 077 && "target/$BUILD/lathe-coordinator" token create --name admin --role admin \
      --etcd "http://127.0.0.1:$ETCD_PORT" >"$dir/secrets/admin-token")
  fi
  LATHE_ETCD="http://127.0.0.1:$ETCD_PORT" start_process coordinator "target/$BUILD/lathe-coordinator" \
    --listen "$COORDINATOR" --blobs "$dir/blobs" --http-listen "$DASHBOARD" \
    --tls-cert "$dir/tls/server.pem" --tls-key "$dir/tls/server-key.pem" --tls-client-ca "$dir/tls/ca.pem"
  wait_port "${COORDINATOR##*:}" coordinator
  for n in $(seq 1 "$WORKERS"); do
    start_process "worker-$n" "target/$BUILD/lathe-worker" --coordinator "https://$COORDINATOR" \
      --id "worker-$n" --slots 1 --scratch "$dir/scratch" \
      --tls-ca "$dir/tls/ca.pem" --tls-cert "$dir/tls/worker-worker-$n.pem" \
      --tls-key "$dir/tls/worker-worker-$n-key.pem" \
      --metrics-listen "127.0.0.1:$((WORKER_METRICS_PORT + n - 1))"
  done
  metrics="http://$DASHBOARD/metrics"
  for n in $(seq 1 "$WORKERS"); do metrics+=" http://127.0.0.1:$((WORKER_METRICS_PORT + n - 1))/metrics"; done
  cat <<MSG
lathe farm up: coordinator https://$COORDINATOR (TLS), NATS nats://127.0.0.1:$NATS_PORT, etcd http://127.0.0.1:$ETCD_PORT
  dashboard: http://$DASHBOARD/
  metrics:   $metrics
  data and logs: $dir/   stop with: make farm-stop
  first, in your shell (TLS with the farm's CA, and the admin token):
    export LATHE_COORDINATOR=https://$COORDINATOR LATHE_CA=$PWD/$dir/tls/ca.pem LATHE_TOKEN_FILE=$PWD/$dir/secrets/admin-token
  submit:  target/$BUILD/lathe submit SOURCES_DIR --profile streaming --watch
  then:    target/$BUILD/lathe fetch JOB --out MASTERS_DIR   (also: status, workers, cancel)
MSG
  ;;
stop)
  [[ -d "$dir/pids" ]] || { echo "no farm recorded in $dir"; exit 0; }
  # Workers first (they drain and hand their tasks back), then the coordinator, then the servers.
  for name in $(ls "$dir/pids" | sed 's/\.pid$//' | sort -r | grep '^worker-' || true) coordinator etcd nats; do
    pidfile="$dir/pids/$name.pid"
    [[ -f $pidfile ]] || continue
    pid=$(cat "$pidfile")
    if kill -0 "$pid" 2>/dev/null; then
      kill -TERM "$pid"
      for _ in $(seq 1 100); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
      kill -0 "$pid" 2>/dev/null && kill -KILL "$pid"
      echo "stopped $name (pid $pid)"
    fi
    rm -f "$pidfile"
  done
  ;;
*) echo "usage: $0 start|stop [DIR]" >&2; exit 2 ;;
esac
