# shellcheck shell=bash
# DynamoDB-compatible test server for fstore-online-dynamo: moto's server (PyPI
# `moto[server]`), on a free loopback port. Sourced by scripts/test.sh.
#
#   start_dynamo   installs moto into a venv under $HOME/.cache/fstore if missing,
#                  starts it on 127.0.0.1, waits until it answers, and exports
#                  FSTORE_TEST_DYNAMO_ENDPOINT plus static *fake* credentials.
#   stop_dynamo    stops the server started by start_dynamo.
#
# Idempotent: a second start_dynamo with a live server keeps it.

FSTORE_MOTO_VERSION="${FSTORE_MOTO_VERSION:-5.2.5}"
FSTORE_MOTO_VENV="${FSTORE_MOTO_VENV:-$HOME/.cache/fstore/moto-venv}"

_dynamo_free_port() {
    python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1]); s.close()'
}

_dynamo_answers() {
    # moto answers any HTTP request; a 2xx-4xx status means it is up.
    python3 - "$1" <<'PY' >/dev/null 2>&1
import sys, urllib.request, urllib.error
try:
    urllib.request.urlopen(sys.argv[1] + "/moto-api/", timeout=1)
except urllib.error.HTTPError:
    pass
PY
}

start_dynamo() {
    if [[ -n "${FSTORE_DYNAMO_PID:-}" ]] && kill -0 "$FSTORE_DYNAMO_PID" 2>/dev/null \
        && [[ -n "${FSTORE_TEST_DYNAMO_ENDPOINT:-}" ]] && _dynamo_answers "$FSTORE_TEST_DYNAMO_ENDPOINT"; then
        echo "dynamo: moto already running at $FSTORE_TEST_DYNAMO_ENDPOINT (pid $FSTORE_DYNAMO_PID)"
        return 0
    fi
    if ! "$FSTORE_MOTO_VENV/bin/python" -c "import moto, sys; sys.exit(moto.__version__ != '$FSTORE_MOTO_VERSION')" 2>/dev/null \
        || [[ ! -x "$FSTORE_MOTO_VENV/bin/moto_server" ]]; then
        echo "dynamo: installing moto[server]==$FSTORE_MOTO_VERSION into $FSTORE_MOTO_VENV"
        mkdir -p "$(dirname "$FSTORE_MOTO_VENV")"
        rm -rf "$FSTORE_MOTO_VENV"
        if ! command -v python3 >/dev/null 2>&1 || ! python3 -m venv "$FSTORE_MOTO_VENV" >/dev/null 2>&1; then
            # A bare Debian needs python3-venv (ensurepip) for `python3 -m venv`.
            echo "dynamo: installing python3 and python3-venv with apt-get"
            apt-get update -qq && apt-get install -y -qq python3 python3-venv >/dev/null || return 1
            rm -rf "$FSTORE_MOTO_VENV"
            python3 -m venv "$FSTORE_MOTO_VENV" || return 1
        fi
        "$FSTORE_MOTO_VENV/bin/pip" install --quiet --disable-pip-version-check \
            "moto[server]==$FSTORE_MOTO_VERSION" || return 1
    fi
    local port log
    port="$(_dynamo_free_port)" || return 1
    log="$HOME/.cache/fstore/moto-$port.log"
    "$FSTORE_MOTO_VENV/bin/moto_server" -H 127.0.0.1 -p "$port" >"$log" 2>&1 &
    FSTORE_DYNAMO_PID=$!
    export FSTORE_DYNAMO_PID
    local endpoint="http://127.0.0.1:$port" i
    for i in $(seq 1 100); do
        if _dynamo_answers "$endpoint"; then
            break
        fi
        if ! kill -0 "$FSTORE_DYNAMO_PID" 2>/dev/null; then
            echo "dynamo: moto_server exited; log:" >&2
            cat "$log" >&2
            return 1
        fi
        sleep 0.2
    done
    if ! _dynamo_answers "$endpoint"; then
        echo "dynamo: moto_server did not answer at $endpoint within 20 s; log: $log" >&2
        return 1
    fi
    export FSTORE_TEST_DYNAMO_ENDPOINT="$endpoint"
    # Static fake credentials and region for the tests (moto accepts any). Never real ones.
    export FSTORE_TEST_DYNAMO_REGION="us-east-1"
    export FSTORE_TEST_DYNAMO_ACCESS_KEY_ID="fstore-test"
    export FSTORE_TEST_DYNAMO_SECRET_ACCESS_KEY="fstore-test"
    # The same moto server speaks S3 (path-style): a bucket for Delta's `s3`
    # feature (fstore-offline-delta/tests/s3.rs), made with moto's own boto3.
    if "$FSTORE_MOTO_VENV/bin/python" - "$endpoint" <<'PY'
import sys, boto3
boto3.client("s3", endpoint_url=sys.argv[1], region_name="us-east-1",
             aws_access_key_id="fstore-test", aws_secret_access_key="fstore-test"
             ).create_bucket(Bucket="fstore-test")
PY
    then
        export FSTORE_TEST_S3_ENDPOINT="$endpoint" FSTORE_TEST_S3_BUCKET="fstore-test"
    else
        echo "dynamo: could not create the S3 bucket on moto" >&2
        return 1
    fi
    echo "dynamo: moto $FSTORE_MOTO_VERSION at $endpoint (pid $FSTORE_DYNAMO_PID), S3 bucket fstore-test"
}

stop_dynamo() {
    if [[ -n "${FSTORE_DYNAMO_PID:-}" ]]; then
        kill "$FSTORE_DYNAMO_PID" 2>/dev/null || true
        wait "$FSTORE_DYNAMO_PID" 2>/dev/null || true
    fi
    unset FSTORE_DYNAMO_PID FSTORE_TEST_DYNAMO_ENDPOINT FSTORE_TEST_DYNAMO_REGION \
        FSTORE_TEST_DYNAMO_ACCESS_KEY_ID FSTORE_TEST_DYNAMO_SECRET_ACCESS_KEY \
        FSTORE_TEST_S3_ENDPOINT FSTORE_TEST_S3_BUCKET
}
