# shellcheck shell=bash
# Redis test servers for fstore-online-redis. Sourced by scripts/test.sh.
#
#   start_redis   installs redis-server (Debian package, also ships redis-cli and
#                 redis-benchmark) when missing, then starts on free 127.0.0.1 ports:
#                   * a single node                     -> FSTORE_TEST_REDIS_URL
#                   * a 3-master Redis Cluster          -> FSTORE_TEST_REDIS_CLUSTER_URL
#                     (a fred cluster URL: redis-cluster://127.0.0.1:A?node=127.0.0.1:B&node=127.0.0.1:C)
#                   * a dedicated single node that the fault test kills and restarts
#                                                       -> FSTORE_TEST_REDIS_FAULT_URL,
#                     FSTORE_TEST_REDIS_FAULT_PIDFILE (pid of that server),
#                     FSTORE_TEST_REDIS_FAULT_RESTART_CMD (shell command that starts it
#                     again on the same port, daemonized, same pidfile)
#                   * a TLS-only single node (Debian's redis-server is built with TLS)
#                     with a CA and server certificate made now by the openssl CLI
#                     (SAN IP:127.0.0.1)                -> FSTORE_TEST_REDIS_TLS_URL (rediss://),
#                     FSTORE_TEST_REDIS_TLS_CA (the CA's PEM file; the test hands it to
#                     rustls as SSL_CERT_FILE in a child process)
#                 Every server runs with --save "" --appendonly no; pidfiles, logs and
#                 data dirs live under one temp dir (FSTORE_TEST_REDIS_DIR).
#                 Idempotent: a second call while the servers answer does nothing.
#   stop_redis    kills every server started above (by pidfile) and removes the temp dir.

_redis_log() { echo "[redis] $*" >&2; }

_redis_install() {
    if command -v redis-server >/dev/null 2>&1 && command -v redis-cli >/dev/null 2>&1; then
        return 0
    fi
    _redis_log "installing redis-server (Debian package)"
    local sudo=""
    if [ "$(id -u)" != 0 ]; then sudo="sudo"; fi
    if ! DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -q redis-server >/dev/null 2>&1; then
        DEBIAN_FRONTEND=noninteractive $sudo apt-get update -q >/dev/null 2>&1 || true
        DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -q redis-server >/dev/null || return 1
    fi
}

# A loopback port that nothing listens on, with port+10000 (cluster bus) free as well.
_redis_free_port() {
    local p i
    for i in $(seq 1 200); do
        p=$(( (RANDOM % 20000) + 20000 ))
        if ! (exec 3<>"/dev/tcp/127.0.0.1/$p") 2>/dev/null \
            && ! (exec 3<>"/dev/tcp/127.0.0.1/$((p + 10000))") 2>/dev/null \
            && [[ " ${_REDIS_TAKEN:-} " != *" $p "* ]]; then
            _REDIS_TAKEN="${_REDIS_TAKEN:-} $p"
            echo "$p"
            return 0
        fi
    done
    return 1
}

# The redis-server command line for one node (printed, so it can be reused as a restart command).
_redis_cmd() {
    local port="$1" extra="${2:-}"
    local d="$FSTORE_TEST_REDIS_DIR/$port"
    echo "redis-server --port $port --bind 127.0.0.1 --save '' --appendonly no --daemonize yes" \
        "--pidfile $d/redis.pid --dir $d --logfile $d/redis.log $extra"
}

_redis_wait_ping() {
    local port="$1" i
    for i in $(seq 1 100); do
        if [ "$(redis-cli -h 127.0.0.1 -p "$port" ping 2>/dev/null)" = "PONG" ]; then return 0; fi
        sleep 0.1
    done
    _redis_log "redis-server on port $port did not answer PING"
    return 1
}

# A throwaway CA and a server certificate for 127.0.0.1, valid for a day.
_redis_make_certs() {
    local d="$1"
    if ! command -v openssl >/dev/null 2>&1; then
        _redis_log "installing openssl (Debian package) for the TLS node's certificates"
        local sudo=""
        if [ "$(id -u)" != 0 ]; then sudo="sudo"; fi
        DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -q openssl >/dev/null 2>&1 \
            || { DEBIAN_FRONTEND=noninteractive $sudo apt-get update -q >/dev/null 2>&1 || true
                 DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -q openssl >/dev/null; } \
            || { _redis_log "openssl CLI missing and not installable"; return 1; }
    fi
    (
        cd "$d" || exit 1
        openssl req -x509 -newkey rsa:2048 -nodes -days 1 -subj "/CN=fstore test CA" \
            -keyout ca.key -out ca.crt \
            -addext "basicConstraints=critical,CA:TRUE" -addext "keyUsage=critical,keyCertSign,cRLSign" &&
        openssl req -newkey rsa:2048 -nodes -subj "/CN=127.0.0.1" -keyout server.key -out server.csr &&
        printf 'subjectAltName=IP:127.0.0.1\nbasicConstraints=CA:FALSE\nkeyUsage=digitalSignature,keyEncipherment\nextendedKeyUsage=serverAuth\n' >server.ext &&
        openssl x509 -req -in server.csr -CA ca.crt -CAkey ca.key -CAcreateserial -days 1 \
            -extfile server.ext -out server.crt
    ) >"$d/openssl.log" 2>&1 || { _redis_log "openssl failed:"; cat "$d/openssl.log" >&2; return 1; }
}

_redis_start_node() {
    local port="$1" extra="${2:-}"
    mkdir -p "$FSTORE_TEST_REDIS_DIR/$port"
    sh -c "$(_redis_cmd "$port" "$extra")" || return 1
    _redis_wait_ping "$port" || { tail -n 20 "$FSTORE_TEST_REDIS_DIR/$port/redis.log" >&2; return 1; }
}

start_redis() {
    if [ -n "${FSTORE_TEST_REDIS_DIR:-}" ] && [ -d "$FSTORE_TEST_REDIS_DIR" ] && [ -n "${FSTORE_TEST_REDIS_URL:-}" ] \
        && redis-cli -u "$FSTORE_TEST_REDIS_URL" ping >/dev/null 2>&1; then
        _redis_log "already running ($FSTORE_TEST_REDIS_DIR)"
        return 0
    fi
    _redis_install || { _redis_log "could not install redis-server"; return 1; }
    export FSTORE_TEST_REDIS_DIR
    FSTORE_TEST_REDIS_DIR="$(mktemp -d "${TMPDIR:-/tmp}/fstore-redis.XXXXXX")"
    _REDIS_TAKEN=""

    local single fault c1 c2 c3 tls port
    single=$(_redis_free_port) && fault=$(_redis_free_port) && c1=$(_redis_free_port) \
        && c2=$(_redis_free_port) && c3=$(_redis_free_port) && tls=$(_redis_free_port) \
        || { _redis_log "no free port"; return 1; }

    _redis_start_node "$single" || return 1
    _redis_start_node "$fault" || return 1
    local certs="$FSTORE_TEST_REDIS_DIR/certs"
    mkdir -p "$certs" "$FSTORE_TEST_REDIS_DIR/$tls"
    _redis_make_certs "$certs" || return 1
    # TLS only (--port 0): a plaintext client cannot talk to it by mistake
    sh -c "redis-server --port 0 --tls-port $tls --bind 127.0.0.1 --save '' --appendonly no --daemonize yes \
        --pidfile $FSTORE_TEST_REDIS_DIR/$tls/redis.pid --dir $FSTORE_TEST_REDIS_DIR/$tls \
        --logfile $FSTORE_TEST_REDIS_DIR/$tls/redis.log --tls-cert-file $certs/server.crt \
        --tls-key-file $certs/server.key --tls-ca-cert-file $certs/ca.crt --tls-auth-clients no" || return 1
    for i in $(seq 1 100); do
        if [ "$(redis-cli --tls --cacert "$certs/ca.crt" -h 127.0.0.1 -p "$tls" ping 2>/dev/null)" = "PONG" ]; then
            break
        fi
        sleep 0.1
    done
    [ "$(redis-cli --tls --cacert "$certs/ca.crt" -h 127.0.0.1 -p "$tls" ping 2>/dev/null)" = "PONG" ] \
        || { _redis_log "TLS redis-server on port $tls did not answer PING"; cat "$FSTORE_TEST_REDIS_DIR/$tls/redis.log" >&2; return 1; }
    for port in "$c1" "$c2" "$c3"; do
        _redis_start_node "$port" "--cluster-enabled yes --cluster-config-file $FSTORE_TEST_REDIS_DIR/$port/nodes.conf --cluster-node-timeout 5000" || return 1
    done
    if ! redis-cli --cluster create "127.0.0.1:$c1" "127.0.0.1:$c2" "127.0.0.1:$c3" \
        --cluster-replicas 0 --cluster-yes >"$FSTORE_TEST_REDIS_DIR/cluster-create.log" 2>&1; then
        _redis_log "redis-cli --cluster create failed:"; cat "$FSTORE_TEST_REDIS_DIR/cluster-create.log" >&2
        return 1
    fi
    local i ok=""
    for i in $(seq 1 100); do
        if redis-cli -p "$c1" cluster info 2>/dev/null | grep -q 'cluster_state:ok' \
            && redis-cli -p "$c2" cluster info 2>/dev/null | grep -q 'cluster_state:ok' \
            && redis-cli -p "$c3" cluster info 2>/dev/null | grep -q 'cluster_state:ok'; then
            ok=1; break
        fi
        sleep 0.1
    done
    [ -n "$ok" ] || { _redis_log "cluster did not reach cluster_state:ok"; return 1; }

    export FSTORE_TEST_REDIS_URL="redis://127.0.0.1:$single"
    export FSTORE_TEST_REDIS_CLUSTER_URL="redis-cluster://127.0.0.1:$c1?node=127.0.0.1:$c2&node=127.0.0.1:$c3"
    export FSTORE_TEST_REDIS_FAULT_URL="redis://127.0.0.1:$fault"
    export FSTORE_TEST_REDIS_TLS_URL="rediss://127.0.0.1:$tls"
    export FSTORE_TEST_REDIS_TLS_CA="$certs/ca.crt"
    export FSTORE_TEST_REDIS_FAULT_PIDFILE="$FSTORE_TEST_REDIS_DIR/$fault/redis.pid"
    export FSTORE_TEST_REDIS_FAULT_RESTART_CMD
    FSTORE_TEST_REDIS_FAULT_RESTART_CMD="$(_redis_cmd "$fault")"
    _redis_log "single $FSTORE_TEST_REDIS_URL, cluster $FSTORE_TEST_REDIS_CLUSTER_URL, fault $FSTORE_TEST_REDIS_FAULT_URL, tls $FSTORE_TEST_REDIS_TLS_URL"
}

stop_redis() {
    local dir="${FSTORE_TEST_REDIS_DIR:-}"
    if [ -n "$dir" ] && [ -d "$dir" ]; then
        local f pid pids=""
        for f in "$dir"/*/redis.pid; do
            [ -f "$f" ] || continue
            pid="$(cat "$f" 2>/dev/null)"
            if [ -n "$pid" ] && kill "$pid" 2>/dev/null; then pids="$pids $pid"; fi
        done
        for pid in $pids; do
            for _ in $(seq 1 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
            kill -9 "$pid" 2>/dev/null || true
        done
        rm -rf "$dir"
    fi
    unset FSTORE_TEST_REDIS_DIR FSTORE_TEST_REDIS_URL FSTORE_TEST_REDIS_CLUSTER_URL FSTORE_TEST_REDIS_FAULT_URL \
        FSTORE_TEST_REDIS_FAULT_PIDFILE FSTORE_TEST_REDIS_FAULT_RESTART_CMD FSTORE_TEST_REDIS_TLS_URL \
        FSTORE_TEST_REDIS_TLS_CA
}
