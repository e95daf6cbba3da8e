#!/usr/bin/env bash
# Builds the desktop sandbox image (computer use, docs/computer-use.md) from
# Debian packages: minbase plus Xvfb (the virtual display), xdotool (the
# actions), chromium (the browser the keeper shows), ImageMagick's import
# (the screenshots), DejaVu fonts, python3 (the keeper and act.py), procps and
# x11-utils (for looking inside a sandbox), libnss3-tools (certutil: the
# keeper adds the egress CA to chromium's NSS store when the session was
# granted egress); dbus-x11 only because debootstrap
# does not pick a provider of dbus-session-bus, which chromium's GTK needs
# installed (no bus ever runs). Our own files come from
# deploy/images/desktop/: the keeper (/usr/local/bin/airlock-desktop), the
# per-call program (/usr/local/lib/airlock-desktop/act.py) and the local test
# page (/opt/airlock-desktop/index.html), and chromium's managed policy
# (/etc/chromium/policies/managed/airlock.json). No registry pull: the image's
# provenance is the Debian archive and this repository. The tag is the cache
# key: bump DESKTOP_REVISION when this script or those files change; an
# existing tag is left alone (idempotent).
set -euo pipefail

DESKTOP_REVISION=5
NAME="${1:-airlock/sandbox-desktop:${DESKTOP_REVISION}}"
MIRROR="${DEBIAN_MIRROR:-http://deb.debian.org/debian}"
FILES="$(cd "$(dirname "$0")/desktop" && pwd)"

if docker image inspect "$NAME" >/dev/null 2>&1; then
  echo "desktop image $NAME present"
  exit 0
fi

command -v debootstrap >/dev/null || { apt-get update -qq && apt-get install -y -qq debootstrap; }

root="$(mktemp -d /var/tmp/airlock-desktop.XXXXXX)"
trap 'rm -rf "$root" "$root.log"' EXIT
echo "building $NAME in $root (debootstrap with chromium, a few minutes the first time)"
start=$SECONDS
debootstrap --variant=minbase \
  --include=python3,procps,xvfb,xdotool,chromium,dbus-x11,imagemagick-6.q16,fonts-dejavu-core,x11-utils,libnss3-tools \
  bookworm "$root" "$MIRROR" >"$root.log" 2>&1 \
  || { tail -20 "$root.log"; exit 1; }

# Setuid/setgid binaries are useless under no-new-privileges (chromium's
# setuid sandbox helper among them: it runs with --no-sandbox), but removing
# the bits means a future runtime misconfiguration still cannot use them.
find "$root" -xdev -type f -perm /6000 -exec chmod ug-s {} +
rm -rf "$root"/var/cache/apt/archives/*.deb "$root"/var/lib/apt/lists/* "$root"/usr/share/doc "$root"/usr/share/man
mkdir -p "$root/work"
install -m 0755 "$FILES/airlock-desktop" "$root/usr/local/bin/airlock-desktop"
install -D -m 0644 "$FILES/act.py" "$root/usr/local/lib/airlock-desktop/act.py"
install -D -m 0644 "$FILES/index.html" "$root/opt/airlock-desktop/index.html"
# The browser's own lock, under the keys and buttons the policy denies: a
# managed policy (chromium reads /etc/chromium/policies/managed) that allows
# only the local page and http(s) URLs (every other URL, file://, chrome://,
# view-source: and devtools:// included, is blocked; http(s) goes only to the
# egress proxy, which reaches nothing without a grant), and turns off developer tools,
# downloads, file dialogs, printing, incognito and guest windows, the task
# manager's kill, sign-in, sync and extensions. A right-click menu or a key
# the denylist missed still reaches nothing.
install -D -m 0644 "$FILES/chromium-policy.json" "$root/etc/chromium/policies/managed/airlock.json"

tar -C "$root" -c . | docker import \
  -c 'USER 65534:65534' \
  -c 'WORKDIR /work' \
  -c 'ENV PATH=/usr/local/bin:/usr/bin:/bin LANG=C.UTF-8 PYTHONDONTWRITEBYTECODE=1' \
  -m "airlock desktop sandbox (debootstrap bookworm minbase + xvfb + xdotool + chromium + imagemagick)" \
  - "$NAME" >/dev/null
echo "built $NAME in $((SECONDS - start)) s"
