#!/usr/bin/env bash
# Build the sandbox image offline (no registry): debootstrap a minimal Debian with g++, Boost headers,
# OpenSSL dev files and python3, precompile bits/stdc++.h for the default flag sets, `docker import` it.
# Idempotent: does nothing when the image exists. Users with a registry can use sandbox/Dockerfile instead.
set -euo pipefail
here=$(cd "$(dirname "$0")/.." && pwd)
image=${1:-$(cd "$here" && python3 -c 'import sandbox.image as i; print(i.DEFAULT_IMAGE)')}
if docker image inspect "$image" >/dev/null 2>&1; then echo "sandbox image $image present"; exit 0; fi

# The Debian mirror and release this host already uses (override with DEBIAN_MIRROR / DEBIAN_SUITE).
mirror=${DEBIAN_MIRROR:-$( (grep -hs '^URIs:' /etc/apt/sources.list.d/*.sources | awk '{print $2}';
                            grep -hs '^deb ' /etc/apt/sources.list | awk '{print $2}' || true) | grep -v security | head -n1 || true)}
suite=${DEBIAN_SUITE:-$(. /etc/os-release && echo "${VERSION_CODENAME:-bookworm}")}
[ -n "$mirror" ] || { echo "no Debian mirror found in apt sources; set DEBIAN_MIRROR" >&2; exit 1; }

root=$(mktemp -d /var/tmp/crucible-rootfs.XXXXXX)
cleanup() { umount "$root/proc" 2>/dev/null || true; rm -rf "$root"; }
trap cleanup EXIT
# Release files must carry a valid Debian signature: --force-check-gpg aborts instead of silently skipping the
# check when the keyring is missing (debootstrap's default then is to warn and go on).
keyring=${DEBIAN_KEYRING:-/usr/share/keyrings/debian-archive-keyring.gpg}
[ -s "$keyring" ] || { echo "no Debian archive keyring at $keyring (apt-get install debian-archive-keyring)" >&2; exit 1; }
echo "debootstrap $suite from $mirror into $root (signatures checked against $keyring)" >&2
debootstrap --force-check-gpg --keyring="$keyring" --variant=minbase \
  --include=g++,libboost-dev,libssl-dev,python3,util-linux \
  "$suite" "$root" "$mirror" >"$root.log" 2>&1 || { tail -n 30 "$root.log" >&2; rm -f "$root.log"; exit 1; }
rm -f "$root.log"

mount -t proc proc "$root/proc"
cp "$here/sandbox/runner.py" "$root/tmp/runner.py"
for flags in $(cd "$here" && python3 -c 'import sandbox.image as i; print(" ".join(",".join(f) for f in i.PCH_FLAG_SETS))'); do
  chroot "$root" python3 /tmp/runner.py build-pch /opt/crucible/pch ${flags//,/ } >/dev/null
done
umount "$root/proc"
rm -rf "$root/tmp/"* "$root/var/cache/apt/archives/"*.deb "$root/var/lib/apt/lists/"*
mkdir -p "$root/work" "$root/opt/crucible" && chmod 1777 "$root/work"
chmod -R a+rX "$root/opt/crucible"
tar -C "$root" -c . | docker import \
  --change 'USER 65534:65534' --change 'WORKDIR /work' --change 'ENV LANG=C.UTF-8' \
  --change "LABEL crucible.sandbox.image=$image" - "$image" >/dev/null
echo "built sandbox image $image" >&2
