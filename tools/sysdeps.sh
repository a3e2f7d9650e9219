#!/usr/bin/env bash
# Install the Debian/Ubuntu packages that building and testing the collection need.
# Only missing packages are installed; when everything is present this takes milliseconds.
set -euo pipefail

# "a|b" accepts either package and installs the first when neither is present.
PACKAGES=(
    bubblewrap
    git
    iproute2
    "nginx|nginx-light|nginx-core|nginx-full"
    openssh-server
    openssl
    python3-venv
    rsync
    shellcheck
)

installed() {
    [ "$(dpkg-query -W -f='${db:Status-Status}' "$1" 2>/dev/null)" = installed ]
}

if ! command -v apt-get >/dev/null || ! command -v dpkg-query >/dev/null; then
    echo "sysdeps: no apt-get here; install these packages by hand: ${PACKAGES[*]}"
    exit 0
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
    echo "sysdeps: not root; skipping the install of: ${missing[*]}"
    exit 0
fi

# Keep package scripts from starting sshd and nginx on the host: tests start their own.
policy=/usr/sbin/policy-rc.d
if [ ! -e "$policy" ]; then
    printf '#!/bin/sh\nexit 101\n' > "$policy"
    chmod 0755 "$policy"
    trap 'rm -f "$policy"' EXIT
fi

echo "sysdeps: installing ${missing[*]}"
export DEBIAN_FRONTEND=noninteractive
apt-get update -qq
apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
