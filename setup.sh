#!/usr/bin/env bash
# Set up vigild on a Debian or Ubuntu host, as root: the build tools for its BPF programs,
# a virtual environment with the package in /opt/vigild, `vigil` and `vigild` on PATH.
#   ./setup.sh          install (or upgrade) from this checkout
#   ./setup.sh --dev    the same plus what the test suite needs (clients, Prometheus)
set -euo pipefail

PREFIX="${VIGIL_PREFIX:-/opt/vigild}"
BIN_DIR="${VIGIL_BIN_DIR:-/usr/local/bin}"
HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
DEV=0
case "${1:-}" in
  --dev) DEV=1 ;;
  "") ;;
  *) echo "usage: $0 [--dev]" >&2; exit 2 ;;
esac

if [ "$(id -u)" -ne 0 ]; then
  echo "setup.sh: run as root (sudo $0): it installs packages and loads BPF programs" >&2
  exit 1
fi
if [ ! -e /sys/kernel/btf/vmlinux ]; then
  echo "setup.sh: warning: this kernel has no BTF (/sys/kernel/btf/vmlinux); vigild needs CONFIG_DEBUG_INFO_BTF=y" >&2
fi

export DEBIAN_FRONTEND=noninteractive
apt_install() { apt-get install -y -q --no-install-recommends "$@" >/dev/null; }
echo "setup.sh: installing Debian packages"
apt-get update -q >/dev/null
# clang 14 (bookworm's default) emits code this kernel's verifier refuses in places; prefer 19.
if apt-cache show clang-19 >/dev/null 2>&1; then CLANG=clang-19; else CLANG=clang; fi
# libc6-dev: the held lane's compiled helper (daemon/pipeline/gil_boost.c) needs libc's headers.
apt_install "$CLANG" libbpf-dev libbpf1 bpftool ca-certificates libc6-dev
# The venv's interpreter must be one every user can run: members of the control group run
# `vigil status`, and a python3 under a 0700 home (pyenv as root) would lock them out. So the
# system's python3 is preferred whenever it is new enough.
PY=python3
if [ -x /usr/bin/python3 ] && /usr/bin/python3 -c 'import sys; sys.exit(sys.version_info < (3, 11))'; then
  PY=/usr/bin/python3
fi
if ! "$PY" -c 'import sys; sys.exit(sys.version_info < (3, 11))'; then
  echo "setup.sh: vigild needs Python >= 3.11 as python3" >&2
  exit 1
fi
# Debian's python3 makes venvs only with python3-venv (ensurepip's wheels) installed.
if [ "$PY" = /usr/bin/python3 ]; then apt_install python3-venv; fi
"$PY" -m venv --help >/dev/null 2>&1 || apt_install python3-venv
if [ "$DEV" -eq 1 ]; then
  apt_install curl prometheus gnutls-bin
  # perf counts the IRQ work interrupts a burst costs its writer (tests/test_ring_reader.py).
  apt_install linux-perf
  # A real browser opens the HTML report in the tests.
  apt_install chromium
  # systemd-analyze verifies the unit; setpriv (util-linux) runs vigild with fewer capabilities.
  apt_install systemd util-linux
  # The real agents run from npm packages, in a loopback-only network namespace (ip, unshare),
  # in a git work tree.
  command -v node >/dev/null || apt_install nodejs
  command -v npm >/dev/null || apt_install npm
  apt_install iproute2 git
  # Agents in real containers (podman; runc, since crun refuses hybrid cgroup hosts); kubectl
  # renders the Kubernetes base for its schema test.
  apt_install podman runc
  command -v kubectl >/dev/null || apt_install kubectl
fi

echo "setup.sh: building and installing vigild into $PREFIX"
# A venv made earlier from an interpreter other users cannot reach is made anew.
# (through env: setpriv's own exec can still pass a 0700 directory that a later exec cannot)
if [ -x "$PREFIX/bin/python" ] && ! setpriv --reuid=65534 --regid=65534 --clear-groups env "$PREFIX/bin/python" -c '' 2>/dev/null; then
  echo "setup.sh: $PREFIX uses an interpreter other users cannot run ($(readlink -f "$PREFIX/bin/python")); recreating it"
  rm -rf "$PREFIX"
fi
[ -x "$PREFIX/bin/python" ] || "$PY" -m venv "$PREFIX"
"$PREFIX/bin/pip" install -q --upgrade pip >/dev/null
# setuptools reuses an earlier build's build/lib: modules since moved or removed would come back.
rm -rf "$HERE/build"
if [ "$DEV" -eq 1 ]; then
  "$PREFIX/bin/pip" install -q "$HERE[test]"
else
  "$PREFIX/bin/pip" install -q "$HERE"
fi
ln -sf "$PREFIX/bin/vigil" "$BIN_DIR/vigil"
ln -sf "$PREFIX/bin/vigild" "$BIN_DIR/vigild"

# Manual pages vigil(8) and vigild(8) and bash/zsh completion, made from the programs' own
# argument parsers, so they never disagree with --help.
MAN_DIR="${VIGIL_MAN_DIR:-/usr/local/share/man/man8}"
install -d "$MAN_DIR" /usr/share/bash-completion/completions /usr/local/share/zsh/site-functions
VERSION="$("$PREFIX/bin/vigil" --version | cut -d' ' -f2)"
for prog in vigil:cli vigild:service; do
  name="${prog%%:*}" module="vigild.daemon.${prog##*:}"
  "$PREFIX/bin/argparse-manpage" --module "$module" --function build_parser --prog "$name" \
    --manual-section 8 --manual-title "vigild manual" --project-name vigild --version "$VERSION" \
    --description "watch and govern AI agents from the kernel" --url "file:///usr/share/doc/vigild" \
    --output "$MAN_DIR/$name.8" >/dev/null
  "$PREFIX/bin/shtab" --shell bash "$module.build_parser" > "/usr/share/bash-completion/completions/$name"
  "$PREFIX/bin/shtab" --shell zsh "$module.build_parser" > "/usr/local/share/zsh/site-functions/_$name"
done

# The service: a default configuration (kept if one exists) and the systemd unit, started only
# where systemd is the init system (containers and CI often run without it).
install -d -m 0755 /etc/vigild /etc/vigild/conf.d
[ -e /etc/vigild/config.toml ] || install -m 0644 "$HERE/daemon/config.example.toml" /etc/vigild/config.toml
if [ -d /etc/systemd/system ]; then
  sed "s|^ExecStart=.*|ExecStart=$PREFIX/bin/vigild|" "$HERE/daemon/service/vigild.service" > /etc/systemd/system/vigild.service
  if [ "$(ps -p 1 -o comm= 2>/dev/null)" = systemd ]; then
    systemctl daemon-reload
    systemctl enable --now vigild.service
    echo "setup.sh: vigild.service enabled and started"
  else
    echo "setup.sh: systemd is not PID 1 here: vigild.service installed but not started (run vigild by hand)"
  fi
fi
if [ "$DEV" -eq 1 ]; then
  echo "setup.sh: installing the pinned real agents the tests run (tests/realagents/pins.txt)"
  "$HERE/tests/realagents/install.sh"
  # Codex's two TLS paths are checked against two releases (tests/test_codex_real.py).
  for version in 0.169.0 0.154.0; do
    dir="${VIGIL_AGENTS_DIR:-/var/cache/vigil-agents}/codex-$version"
    [ -e "$dir/node_modules/@openai/codex-linux-x64" ] && continue
    mkdir -p "$dir"
    (cd "$dir" && npm install --no-audit --no-fund --ignore-scripts --loglevel=error "@openai/codex@$version" >/dev/null)
  done
  # The MCP server the MCP-over-stdio tests drive (tests/test_mcp_stdio.py).
  dir="${VIGIL_AGENTS_DIR:-/var/cache/vigil-agents}/mcp-server-filesystem"
  if [ ! -e "$dir/node_modules/@modelcontextprotocol/server-filesystem/dist/index.js" ]; then
    mkdir -p "$dir"
    (cd "$dir" && npm install --no-audit --no-fund --loglevel=error "@modelcontextprotocol/server-filesystem@2026.8.31" >/dev/null)
  fi
fi
echo "setup.sh: done: $("$BIN_DIR/vigil" --help | head -1)"
