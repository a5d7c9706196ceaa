#!/usr/bin/env bash
# Installs what the browser tests need (crates/tidewire/tests/web.rs): Debian's
# chromium and the npm package playwright-core at the version of the lock file.
# Does nothing when they are already installed.
set -euo pipefail
cd "$(dirname "$0")"

need_apt=()
[ -x /usr/bin/chromium ] || need_apt+=(chromium)
command -v npm >/dev/null || need_apt+=(nodejs npm)
if [ ${#need_apt[@]} -gt 0 ]; then
    echo "web/setup.sh: installing ${need_apt[*]}" >&2
    sudo_=""
    [ "$(id -u)" = 0 ] || sudo_="sudo"
    $sudo_ apt-get update -q
    $sudo_ apt-get install -y -q "${need_apt[@]}"
fi

if ! cmp -s package-lock.json node_modules/.installed.lock 2>/dev/null; then
    echo "web/setup.sh: installing playwright-core into web/node_modules" >&2
    npm ci --no-audit --no-fund --loglevel=error
    cp package-lock.json node_modules/.installed.lock
fi
