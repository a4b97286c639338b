#!/usr/bin/env bash
# A local farm on loopback: nats-server (JetStream), etcd, a coordinator and two workers, every
# connection over TLS with credentials. Everything it writes (data, logs, pid files, the CA and
# certificates in DIR/tls, passwords and the admin token in DIR/secrets, mode 0600) is under one
# folder (default: farm/, git-ignored).
#   deploy/local-farm.sh start   [DIR]   build, start, print the coordinator's address and credentials
#   deploy/local-farm.sh servers [DIR]   only nats-server and etcd (TLS, users), for a coordinator
#                                        run by hand
#   deploy/local-farm.sh stop    [DIR]   stop exactly the processes recorded in DIR/pids
set -euo pipefail
cd "$(dirname "$0")/.."
action=${1:-start}
dir=${2:-farm}
NATS_PORT=${NATS_PORT:-14222}
ETCD_PORT=${ETCD_PORT:-12379}
ETCD_PEER_PORT=${ETCD_PEER_PORT:-12380}
COORDINATOR=${COORDINATOR:-127.0.0.1:7480}
DASHBOARD=${DASHBOARD:-127.0.0.1:7481}   # the coordinator's dashboard (HTTPS)
COORDINATOR_METRICS=${COORDINATOR_METRICS:-127.0.0.1:7479}   # the coordinator's /metrics and health (plain HTTP)
WORKER_METRICS_PORT=${WORKER_METRICS_PORT:-7482}   # worker n: /metrics and health on this + n - 1
WORKERS=${WORKERS:-2}
BUILD=${BUILD:-release}   # or debug
BIN=${BIN:-target/$BUILD}   # where lathe-coordinator and lathe-worker are
NAMESPACE=/lathe/

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

# A random password in $dir/secrets/NAME (mode 0600), made once and kept across restarts.
password() {
  local file="$dir/secrets/$1"
  if [[ ! -s $file ]]; then
    # `p` first: nats-server reads a password as a value of its configuration, and one that
    # began with a digit would be read as a number (deploy/nats-auth.conf).
    (umask 077; printf 'p%s' "$(od -An -tx1 -N32 /dev/urandom | tr -d ' \n')" >"$file")
  fi
}

# The CA (made once), a server certificate for 127.0.0.1 (the coordinator's, NATS's and etcd's)
# and one client certificate per worker (its common name is the worker's id); random passwords for
# the NATS users (coordinator, worker) and the etcd users (root, lathe); nats-server (TLS with
# client certificates, the users of deploy/nats-auth.conf) and etcd (TLS; the users, and
# authentication on).
start_servers() {
  mkdir -p "$dir/pids" "$dir/logs" "$dir/nats" "$dir/etcd" "$dir/tls" "$dir/secrets"
  chmod 700 "$dir/tls" "$dir/secrets"
  local workers=()
  for n in $(seq 1 "$WORKERS"); do workers+=(--worker "w$n"); done
  "$BIN/lathe-coordinator" certs --dir "$dir/tls" "${workers[@]}" >/dev/null
  for name in nats-coordinator-password nats-worker-password etcd-root-password etcd-lathe-password; do
    password "$name"
  done
  local abs; abs=$(cd "$dir" && pwd)
  cp deploy/nats-auth.conf "$dir/nats-auth.conf"
  cat >"$dir/nats.conf" <<CONF
listen: "127.0.0.1:$NATS_PORT"
jetstream { store_dir: "$abs/nats" }
tls {
  cert_file: "$abs/tls/server.pem"
  key_file: "$abs/tls/server-key.pem"
  ca_file: "$abs/tls/ca.pem"
  verify: true
}
include ./nats-auth.conf
CONF
  # The passwords reach nats-server in its environment (read by its user only), not its command line.
  NATS_COORDINATOR_PASSWORD=$(<"$dir/secrets/nats-coordinator-password") \
  NATS_WORKER_PASSWORD=$(<"$dir/secrets/nats-worker-password") \
    start_process nats nats-server -c "$dir/nats.conf"
  # Clients need a certificate from the farm's CA (--trusted-ca-file) and a user. No
  # --client-cert-auth: with it etcd would take a certificate's common name as a user name, and the
  # farm's CA also signs the workers' certificates, whose names the operator chooses.
  start_process etcd etcd --name lathe --data-dir "$dir/etcd" \
    --listen-client-urls "https://127.0.0.1:$ETCD_PORT" --advertise-client-urls "https://127.0.0.1:$ETCD_PORT" \
    --cert-file "$dir/tls/server.pem" --key-file "$dir/tls/server-key.pem" --trusted-ca-file "$dir/tls/ca.pem" \
    --listen-peer-urls "http://127.0.0.1:$ETCD_PEER_PORT" --initial-advertise-peer-urls "http://127.0.0.1:$ETCD_PEER_PORT" \
    --initial-cluster "lathe=http://127.0.0.1:$ETCD_PEER_PORT" \
    --auto-compaction-mode revision --auto-compaction-retention 100000 --quota-backend-bytes 8589934592
  wait_port "$NATS_PORT" nats
  wait_port "$ETCD_PORT" etcd
  # etcd's root user and the coordinator's (read and write under the namespace, nothing else), then
  # authentication on; on later starts it only sets the passwords again.
  "$BIN/lathe-coordinator" etcd-users --etcd "https://127.0.0.1:$ETCD_PORT" --namespace "$NAMESPACE" \
    --etcd-ca "$dir/tls/ca.pem" --etcd-cert "$dir/tls/server.pem" --etcd-key "$dir/tls/server-key.pem" \
    --root-password-file "$dir/secrets/etcd-root-password" \
    --etcd-user lathe --etcd-password-file "$dir/secrets/etcd-lathe-password"
}

case $action in
servers)
  start_servers
  cat <<MSG
NATS nats://127.0.0.1:$NATS_PORT (TLS, users coordinator and worker), etcd https://127.0.0.1:$ETCD_PORT (TLS, user lathe)
  CA: $dir/tls/ca.pem   passwords: $dir/secrets/   stop with: make farm-stop
MSG
  ;;
start)
  if [[ -n ${SKIP_BUILD:-} ]]; then
    :
  elif [[ $BUILD == release ]]; then
    cargo build --release --quiet -p lathe-coordinator -p lathe-worker -p lathe-cli
  else
    cargo build --quiet -p lathe-coordinator -p lathe-worker -p lathe-cli
  fi
  start_servers
  mkdir -p "$dir/blobs" "$dir/scratch"
  nats="nats://127.0.0.1:$NATS_PORT" etcd="https://127.0.0.1:$ETCD_PORT"
  # Each process gets its own credentials in its environment; nothing is exported to the workers
  # that they must not have (they hold no etcd credentials at all).
  LATHE_NATS=$nats LATHE_NATS_CA="$dir/tls/ca.pem" \
  LATHE_NATS_CERT="$dir/tls/server.pem" LATHE_NATS_KEY="$dir/tls/server-key.pem" \
  LATHE_NATS_USER=coordinator LATHE_NATS_PASSWORD_FILE="$dir/secrets/nats-coordinator-password" \
  LATHE_ETCD=$etcd LATHE_ETCD_CA="$dir/tls/ca.pem" \
  LATHE_ETCD_CERT="$dir/tls/server.pem" LATHE_ETCD_KEY="$dir/tls/server-key.pem" \
  LATHE_ETCD_USER=lathe LATHE_ETCD_PASSWORD_FILE="$dir/secrets/etcd-lathe-password" \
    start_process coordinator "$BIN/lathe-coordinator" --listen "$COORDINATOR" --blobs "$dir/blobs" \
      --http-listen "$DASHBOARD" --metrics-listen "$COORDINATOR_METRICS" --namespace "$NAMESPACE" \
      --tls-cert "$dir/tls/server.pem" --tls-key "$dir/tls/server-key.pem" --tls-client-ca "$dir/tls/ca.pem"
  wait_port "${COORDINATOR##*:}" coordinator
  for n in $(seq 1 "$WORKERS"); do
    LATHE_NATS=$nats LATHE_NATS_CA="$dir/tls/ca.pem" \
    LATHE_NATS_CERT="$dir/tls/worker-w$n.pem" LATHE_NATS_KEY="$dir/tls/worker-w$n-key.pem" \
    LATHE_NATS_USER=worker LATHE_NATS_PASSWORD_FILE="$dir/secrets/nats-worker-password" \
      start_process "worker-$n" "$BIN/lathe-worker" --coordinator "https://$COORDINATOR" \
        --id "w$n" --slots 1 --scratch "$dir/scratch" \
        --tls-ca "$dir/tls/ca.pem" --tls-cert "$dir/tls/worker-w$n.pem" --tls-key "$dir/tls/worker-w$n-key.pem" \
        --metrics-listen "127.0.0.1:$((WORKER_METRICS_PORT + n - 1))"
  done
  # One admin token, made on the first start (each `token create` makes another; revoke with
  # `lathe-coordinator token revoke ID`).
  if [[ ! -s "$dir/secrets/admin-token" ]]; then
    (umask 077
     LATHE_ETCD_CA="$dir/tls/ca.pem" LATHE_ETCD_USER=lathe \
     LATHE_ETCD_CERT="$dir/tls/server.pem" LATHE_ETCD_KEY="$dir/tls/server-key.pem" \
     LATHE_ETCD_PASSWORD_FILE="$dir/secrets/etcd-lathe-password" \
       "$BIN/lathe-coordinator" token create --name admin --role admin --etcd "$etcd" \
         --namespace "$NAMESPACE" >"$dir/secrets/admin-token.new" 2>"$dir/logs/token.log"
     mv "$dir/secrets/admin-token.new" "$dir/secrets/admin-token")
  fi
  metrics="http://$COORDINATOR_METRICS/metrics"
  for n in $(seq 1 "$WORKERS"); do metrics+=" http://127.0.0.1:$((WORKER_METRICS_PORT + n - 1))/metrics"; done
  abs=$(cd "$dir" && pwd)
  cat <<MSG
lathe farm up: coordinator https://$COORDINATOR, NATS nats://127.0.0.1:$NATS_PORT (TLS), etcd https://127.0.0.1:$ETCD_PORT
  dashboard: https://$DASHBOARD/ (the farm's CA in tls/ca.pem; sign in with the admin token)
  metrics:   $metrics
  data and logs: $dir/   CA and certificates: $dir/tls/   passwords and the admin token: $dir/secrets/
  stop with: make farm-stop
  for the CLI (the admin token; make others with lathe-coordinator token create):
    export LATHE_COORDINATOR=https://$COORDINATOR LATHE_CA=$abs/tls/ca.pem LATHE_TOKEN_FILE=$abs/secrets/admin-token
  submit:  $BIN/lathe submit SOURCES_DIR --profile streaming --watch
  then:    $BIN/lathe fetch JOB --out MASTERS_DIR   (also: status, workers, cancel)
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
*) echo "usage: $0 start|servers|stop [DIR]" >&2; exit 2 ;;
esac
