#!/usr/bin/env bash
# Builds the sandbox image from Debian packages: minbase plus python3 with its
# full standard library (agents expect json, urllib, ...), procps (ps, for
# agents and for the tests that look inside a session sandbox), and curl with
# Debian's CA certificates (the web through the egress proxy, whose trust
# bundle SSL_CERT_FILE and CURL_CA_BUNDLE point at when egress is granted).
# No registry pull is possible or wanted: the image's provenance is the Debian archive. The tag
# is the cache key: bump SANDBOX_REVISION when this script changes so that
# machines rebuild; an existing tag is left alone (idempotent).
set -euo pipefail

SANDBOX_REVISION=4
NAME="${1:-airlock/sandbox-python:${SANDBOX_REVISION}}"
MIRROR="${DEBIAN_MIRROR:-http://deb.debian.org/debian}"

if docker image inspect "$NAME" >/dev/null 2>&1; then
  echo "sandbox image $NAME present"
  exit 0
fi

command -v debootstrap >/dev/null || { apt-get update -qq && apt-get install -y -qq debootstrap; }

root="$(mktemp -d /var/tmp/airlock-sandbox.XXXXXX)"
trap 'rm -rf "$root"' EXIT
echo "building $NAME in $root (debootstrap, ~40 s)"
debootstrap --variant=minbase --include=python3,procps,curl,ca-certificates bookworm "$root" "$MIRROR" >"$root.log" 2>&1 \
  || { tail -20 "$root.log"; exit 1; }
rm -f "$root.log"

# Setuid/setgid binaries are useless under no-new-privileges, but removing the
# bits means a future runtime misconfiguration still cannot use them.
find "$root" -xdev -type f -perm /6000 -exec chmod ug-s {} +
rm -rf "$root"/var/cache/apt/archives/*.deb "$root"/var/lib/apt/lists/* "$root"/usr/share/doc "$root"/usr/share/man
# The work dir is replaced by a tmpfs at run time; it exists so the mount
# point is there even on a read-only root.
mkdir -p "$root/work"

tar -C "$root" -c . | docker import \
  -c 'USER 65534:65534' \
  -c 'WORKDIR /work' \
  -c 'ENV PATH=/usr/local/bin:/usr/bin:/bin LANG=C.UTF-8 PYTHONDONTWRITEBYTECODE=1' \
  -m "airlock sandbox (debootstrap bookworm minbase + python3 + procps + curl)" \
  - "$NAME" >/dev/null
echo "built $NAME"
