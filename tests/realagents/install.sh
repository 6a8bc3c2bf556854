#!/usr/bin/env bash
# Pre-install the pinned real agents (pins.txt) from the npm registry into a cache outside the
# repository, one directory per agent and version: $VIGIL_AGENTS_CACHE/<name>@<version>
# (default /var/cache/vigil-agents). Install scripts are not run: the tests start each agent's
# entry point or platform binary directly. Idempotent; a finished install is marked by .complete.
# Usage: tests/realagents/install.sh [NAME...]   (default: every pinned agent)
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
cache=${VIGIL_AGENTS_CACHE:-/var/cache/vigil-agents}
command -v npm >/dev/null || { echo "install.sh: npm is missing (Debian: apt-get install nodejs npm)" >&2; exit 1; }
mkdir -p "$cache"
status=0
while read -r name pkg version; do
    [[ -z "$name" || "$name" == \#* ]] && continue
    if (($#)) && [[ " $* " != *" $name "* ]]; then continue; fi
    dir="$cache/$name@$version"
    if [[ -f "$dir/.complete" ]]; then echo "$name@$version: already installed in $dir"; continue; fi
    rm -rf "$dir.tmp" && mkdir -p "$dir.tmp"
    echo "$name@$version: installing $pkg@$version into $dir"
    if (cd "$dir.tmp" && npm install --no-audit --no-fund --ignore-scripts --loglevel=error \
            --prefix "$dir.tmp" "$pkg@$version" >npm.log 2>&1); then
        touch "$dir.tmp/.complete"
        rm -rf "$dir" && mv "$dir.tmp" "$dir"
    else
        echo "$name@$version: npm install failed; see $dir.tmp/npm.log" >&2
        status=1
    fi
done <"$here/pins.txt"
exit $status
