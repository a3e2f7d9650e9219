#!/usr/bin/env bash
# Install the Debian/Ubuntu packages that building and testing the collection need.
# Only missing packages are installed; when everything is present this takes milliseconds.
# Fails (exit 1, saying why) when a package is missing and cannot be installed: not root, no
# apt-get, or apt-get failed. Tests whose prerequisites are missing skip, and with CI set a skip
# fails the run, so this is where a machine that cannot run them all is told so.
set -euo pipefail

fail() {
    echo "sysdeps: $*" >&2
    exit 1
}

# "a|b" accepts either package and installs the first when neither is present.
PACKAGES=(
    aria2
    bubblewrap
    git
    gnupg
    gpgv
    iproute2
    libfuse2
    "nginx|nginx-light|nginx-core|nginx-full"
    openssh-client
    openssh-server
    openssl
    opentracker
    python3-venv
    rsync
    shellcheck
    squid
    strace
    sudo
)

installed() {
    [ "$(dpkg-query -W -f='${db:Status-Status}' "$1" 2>/dev/null)" = installed ]
}

if ! command -v apt-get >/dev/null || ! command -v dpkg-query >/dev/null; then
    fail "apt-get or dpkg-query is missing here; install these packages (or their equivalents) by hand: ${PACKAGES[*]}"
fi

missing=()
for choices in "${PACKAGES[@]}"; do
    found=
    IFS='|' read -ra alternatives <<< "$choices"
    for package in "${alternatives[@]}"; do
        if installed "$package"; then
            found=1
            break
        fi
    done
    [ -n "$found" ] || missing+=("${alternatives[0]}")
done

if [ ${#missing[@]} -eq 0 ]; then
    exit 0
fi
if [ "$(id -u)" -ne 0 ]; then
    fail "not root, so cannot install: ${missing[*]} (run 'sudo make sysdeps', or install them by hand)"
fi

# Keep package scripts from starting sshd, nginx, opentracker and squid on the host: tests start their own.
policy=/usr/sbin/policy-rc.d
if [ ! -e "$policy" ]; then
    printf '#!/bin/sh\nexit 101\n' > "$policy"
    chmod 0755 "$policy"
    trap 'rm -f "$policy"' EXIT
fi

echo "sysdeps: installing ${missing[*]}"
export DEBIAN_FRONTEND=noninteractive
apt-get update -qq || fail "apt-get update failed; nothing installed"
apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null || fail "apt-get install failed for: ${missing[*]}"
still=()
for package in "${missing[@]}"; do
    installed "$package" || still+=("$package")
done
[ ${#still[@]} -eq 0 ] || fail "still not installed after apt-get: ${still[*]}"
