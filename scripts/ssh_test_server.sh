#!/usr/bin/env bash
# A throwaway OpenSSH server for the device tests: 127.0.0.1 only, a non-default port, a throwaway
# host key and client key in a temporary folder, key authentication only. Nothing in /etc/ssh or
# ~/.ssh is read or changed.
#
#   scripts/ssh_test_server.sh install      # installs Debian's openssh-server if sshd is missing
#   scripts/ssh_test_server.sh start [DIR]  # (installs if needed,) starts one; prints KEY=VALUE lines
#   scripts/ssh_test_server.sh stop DIR     # stops it and removes DIR
#   scripts/ssh_test_server.sh prepare [DIR [PORT]]  # keys and sshd_config only; the caller runs
#                                           # `$SSHD -D -e -f $SSHD_CONFIG` (what the tests do)
#
# `start` prints what the tests need:
#   SSHD_DIR=...  SSHD_PORT=...  SSHD_PID=...  SSH_USER=...  SSH_IDENTITY=...  SSH_KNOWN_HOSTS=...
#   SSH_OTHER_IDENTITY=... (a key the server does not accept)  SSH_OTHER_KNOWN_HOSTS=... (a known_hosts
#   naming another host key for the same address: a host key mismatch)  SSHD_LOG=...
set -euo pipefail

SSHD=${SSHD:-/usr/sbin/sshd}
say() { echo "ssh_test_server: $*" >&2; }
die() { say "error: $*"; exit 1; }

install_sshd() {
    [ -x "$SSHD" ] && return 0
    [ "$(id -u)" = 0 ] || die "$SSHD missing and not root: install Debian's openssh-server (apt-get install openssh-server)"
    command -v apt-get >/dev/null || die "$SSHD missing and no apt-get: install openssh-server"
    say "installing Debian's openssh-server (its system service is not started)"
    # invoke-rc.d consults policy-rc.d: exit 101 forbids starting the package's own sshd on port 22.
    local policy=/usr/sbin/policy-rc.d created=0
    if [ ! -e "$policy" ]; then
        printf '#!/bin/sh\nexit 101\n' > "$policy"; chmod +x "$policy"; created=1
    fi
    local rc=0
    DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends openssh-server >/dev/null || rc=$?
    if [ "$rc" != 0 ]; then
        apt-get update -q >/dev/null 2>&1 || true
        rc=0
        DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends openssh-server >/dev/null || rc=$?
    fi
    [ "$created" = 1 ] && rm -f "$policy"
    [ "$rc" = 0 ] && [ -x "$SSHD" ] || die "apt-get install openssh-server failed"
}

free_port() {
    python3 - <<'EOF'
import socket
s = socket.socket()
s.bind(("127.0.0.1", 0))
print(s.getsockname()[1])
s.close()
EOF
}

# prepare DIR PORT: keys, authorized_keys, known_hosts and sshd_config in DIR (nothing started).
prepare() {
    local dir=$1 port=$2 user
    user=$(id -un)
    for k in host other_host client wrong; do
        [ -f "$dir/${k}_ed25519" ] || ssh-keygen -q -t ed25519 -N "" -C "edgekit-test-$k" -f "$dir/${k}_ed25519"
    done
    cp "$dir/client_ed25519.pub" "$dir/authorized_keys"
    chmod 600 "$dir/authorized_keys"
    # sshd's privilege separation needs this empty directory when run as root.
    if [ "$(id -u)" = 0 ]; then mkdir -p /run/sshd && chmod 755 /run/sshd; fi
    cat > "$dir/sshd_config" <<EOF
Port $port
ListenAddress 127.0.0.1
HostKey $dir/host_ed25519
PidFile $dir/sshd.pid
AuthorizedKeysFile $dir/authorized_keys
AllowUsers $user
PubkeyAuthentication yes
PasswordAuthentication no
KbdInteractiveAuthentication no
PermitRootLogin prohibit-password
UsePAM no
StrictModes no
PrintMotd no
MaxStartups 64
MaxSessions 64
LogLevel VERBOSE
EOF
    echo "[127.0.0.1]:$port $(cut -d' ' -f1,2 "$dir/host_ed25519.pub")" > "$dir/known_hosts"
    echo "[127.0.0.1]:$port $(cut -d' ' -f1,2 "$dir/other_host_ed25519.pub")" > "$dir/other_known_hosts"
    cat <<EOF
SSHD_DIR=$dir
SSHD_PORT=$port
SSHD=$SSHD
SSHD_CONFIG=$dir/sshd_config
SSH_USER=$user
SSH_IDENTITY=$dir/client_ed25519
SSH_KNOWN_HOSTS=$dir/known_hosts
SSH_OTHER_IDENTITY=$dir/wrong_ed25519
SSH_OTHER_KNOWN_HOSTS=$dir/other_known_hosts
SSHD_LOG=$dir/sshd.log
EOF
}

newdir() {
    local dir=${1:-}
    if [ -z "$dir" ]; then dir=$(mktemp -d "${TMPDIR:-/tmp}/edgekit-sshd.XXXXXX"); else mkdir -p "$dir"; fi
    dir=$(cd "$dir" && pwd)
    chmod 700 "$dir"
    echo "$dir"
}

# start [DIR]: prepare, then run sshd as a daemon; the tests instead run `sshd -D -f SSHD_CONFIG`
# themselves after `prepare`, so that the test process owns (and reaps) the server.
start() {
    install_sshd
    command -v ssh-keygen >/dev/null || die "ssh-keygen missing (apt-get install openssh-client)"
    local dir tries=0 lines
    dir=$(newdir "${1:-}")
    while :; do
        lines=$(prepare "$dir" "$(free_port)")
        rm -f "$dir/sshd.pid"
        if "$SSHD" -f "$dir/sshd_config" -E "$dir/sshd.log"; then
            for _ in $(seq 50); do [ -s "$dir/sshd.pid" ] && break; sleep 0.1; done
            [ -s "$dir/sshd.pid" ] && break
        fi
        tries=$((tries + 1))
        [ "$tries" -lt 5 ] || die "sshd would not start: $(tail -3 "$dir/sshd.log" 2>/dev/null)"
    done
    echo "$lines"
    echo "SSHD_PID=$(cat "$dir/sshd.pid")"
}

stop() {
    local dir=${1:?stop needs the DIR that start printed}
    [ -f "$dir/sshd_config" ] || die "$dir: not a folder made by '$0 start'"
    if [ -s "$dir/sshd.pid" ]; then kill "$(cat "$dir/sshd.pid")" 2>/dev/null || true; fi
    rm -rf "$dir"
}

case "${1:-start}" in
    install) install_sshd ;;
    start) shift || true; start "${1:-}" ;;
    prepare) shift || true; install_sshd; d=$(newdir "${1:-}"); prepare "$d" "${2:-$(free_port)}" ;;
    stop) shift; stop "${1:-}" ;;
    *) die "usage: $0 install | start [DIR] | prepare [DIR [PORT]] | stop DIR" ;;
esac
