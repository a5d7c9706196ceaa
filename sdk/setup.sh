#!/usr/bin/env bash
# Installs the client SDKs the tests drive (crates/tidewire/tests/sdk.rs): the
# `openai` Python package in sdk/.venv, and the npm packages of sdk/js, at the
# versions of their lock files. Does nothing when they are already installed.
set -euo pipefail
cd "$(dirname "$0")"

need_apt=()
command -v python3 >/dev/null || need_apt+=(python3)
python3 -c 'import ensurepip, venv' 2>/dev/null || need_apt+=(python3-venv)
command -v npm >/dev/null || need_apt+=(nodejs npm)
if [ ${#need_apt[@]} -gt 0 ]; then
    echo "sdk/setup.sh: installing ${need_apt[*]}" >&2
    sudo_=""
    [ "$(id -u)" = 0 ] || sudo_="sudo"
    $sudo_ apt-get update -q
    $sudo_ apt-get install -y -q "${need_apt[@]}"
fi

lock_python=python/requirements.lock
if ! cmp -s "$lock_python" .venv/installed.lock 2>/dev/null; then
    echo "sdk/setup.sh: installing the Python SDK into sdk/.venv" >&2
    rm -rf .venv
    python3 -m venv .venv
    .venv/bin/pip install -q --disable-pip-version-check -r "$lock_python"
    cp "$lock_python" .venv/installed.lock
fi

# schemathesis (property-based tests of the OpenAPI document against the live
# server), in a venv of its own: its dependencies are not the SDK's.
lock_schemathesis=python/schemathesis.lock
if ! cmp -s "$lock_schemathesis" .venv-schemathesis/installed.lock 2>/dev/null; then
    echo "sdk/setup.sh: installing schemathesis into sdk/.venv-schemathesis" >&2
    rm -rf .venv-schemathesis
    python3 -m venv .venv-schemathesis
    .venv-schemathesis/bin/pip install -q --disable-pip-version-check -r "$lock_schemathesis"
    cp "$lock_schemathesis" .venv-schemathesis/installed.lock
fi

if ! cmp -s js/package-lock.json js/node_modules/.installed.lock 2>/dev/null; then
    echo "sdk/setup.sh: installing the npm packages into sdk/js/node_modules" >&2
    (cd js && npm ci --no-audit --no-fund --loglevel=error)
    cp js/package-lock.json js/node_modules/.installed.lock
fi
