#!/usr/bin/env bash
# Builds the deployment images from Debian packages and the project's own
# wheel -- never from a registry (there is none here, and an image's
# provenance should be the Debian archive plus our lock file):
#
#   airlock/base:<rev>        debootstrap bookworm minbase, imported (the root of all)
#   airlock/python:<rev>      + python3 (Debian's)
#   airlock/gateway:<ver>     the gateway daemon          uid 10001
#   airlock/executor:<ver>    the executor daemon         uid 10002 (+ the Docker socket's group at run time)
#   airlock/opa:<ver>         OPA (the pinned build)      uid 10003
#   airlock/agent:<ver>       an example agent: airlock[agent] only  uid 10004
#   airlock/prometheus:<ver>  Debian's Prometheus, for the compose example  uid 10005
#
# Python packages come from requirements.lock, each checked against its hash,
# into a wheelhouse; the images install from that wheelhouse only (no index).
# Each image carries OCI labels with the version and the source revision.
# Prints one line per image: name, id, size. Idempotent: Docker's layer cache
# makes a second run take seconds.
#
#   deploy/images/build.sh [--quiet]
set -euo pipefail

REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
source "$REPO/scripts/_env.sh"
HERE="$REPO/deploy/images"
QUIET="${1:-}"
# Bump when the base rootfs recipe below changes (the tag is its cache key).
BASE_REVISION=1
MIRROR="${DEBIAN_MIRROR:-http://deb.debian.org/debian}"
VERSION="$(sed -n 's/^version = "\(.*\)"/\1/p' "$REPO/pyproject.toml" | head -1)"
REVISION="$(git -C "$REPO" rev-parse HEAD 2>/dev/null || echo unknown)"
if [[ "$REVISION" != unknown ]] && [[ -n "$(git -C "$REPO" status --porcelain --untracked-files=no 2>/dev/null)" ]]; then
  REVISION="$REVISION-dirty"
fi
PY="${AIRLOCK_PYTHON:-$REPO/.venv/bin/python}"
CACHE="${AIRLOCK_IMAGE_CACHE:-/var/cache/airlock/wheelhouse}"

say() { [[ "$QUIET" == "--quiet" ]] || echo "images: $*" >&2; }
LOG="$(mktemp /tmp/airlock-images.XXXXXX.log)"
CTX="$(mktemp -d /tmp/airlock-images.XXXXXX)"
root=""
trap 'rm -rf "$LOG" "$CTX" ${root:+"$root"}' EXIT
quietly() { "$@" >>"$LOG" 2>&1 || { cat "$LOG" >&2; echo "images: failed: $*" >&2; return 1; }; }

# --- the base rootfs -------------------------------------------------------
BASE="airlock/base:$BASE_REVISION"
if ! docker image inspect "$BASE" >/dev/null 2>&1; then
  root="$(mktemp -d /var/tmp/airlock-base.XXXXXX)"
  say "debootstrap bookworm minbase for $BASE (~40 s)"
  quietly debootstrap --variant=minbase --include=ca-certificates bookworm "$root" "$MIRROR"
  # Nothing in these images needs setuid; a misconfigured runtime then has
  # nothing to escalate with either.
  find "$root" -xdev -type f -perm /6000 -exec chmod ug-s {} +
  rm -rf "$root"/var/cache/apt/archives/*.deb "$root"/var/lib/apt/lists/* "$root"/usr/share/doc "$root"/usr/share/man
  tar -C "$root" -c . | docker import \
    -c 'ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin LANG=C.UTF-8' \
    -m "airlock base (debootstrap bookworm minbase)" - "$BASE" >/dev/null
  rm -rf "$root"
  root=""
fi

# --- the wheelhouse --------------------------------------------------------
mkdir -p "$CACHE"
say "wheelhouse: requirements.lock (hashes checked) and the project's wheel"
quietly "$PY" -m pip download -q --require-hashes --no-deps --only-binary=:all: \
  --python-version 3.11 --platform manylinux2014_x86_64 --platform manylinux_2_17_x86_64 \
  --platform manylinux_2_28_x86_64 --platform any \
  -r "$REPO/requirements.lock" -d "$CACHE"
mkdir -p "$CTX/wheels"
cp "$CACHE"/*.whl "$CTX/wheels/"
quietly "$PY" -m pip wheel -q --no-deps --no-build-isolation -w "$CTX/wheels" "$REPO"
cp "$(command -v opa 2>/dev/null || echo "$AIRLOCK_TOOLS/opa")" "$CTX/opa"
cp "$(command -v prometheus)" "$CTX/prometheus"
cp "$HERE"/Dockerfile.* "$HERE/airlock-daemon" "$CTX/"

labels=(
  --label "org.opencontainers.image.version=$VERSION"
  --label "org.opencontainers.image.revision=$REVISION"
  --label "org.opencontainers.image.source=airlock"
  --label "org.opencontainers.image.vendor=Airlock"
)
build() { # name dockerfile [build args...]
  local name="$1" file="$2"
  shift 2
  say "docker build $name"
  quietly docker build -q -f "$CTX/$file" --build-arg "BASE=$BASE" --build-arg "PYTHON=airlock/python:$BASE_REVISION" \
    "${labels[@]}" --label "org.opencontainers.image.title=$name" "$@" -t "$name" "$CTX"
}
build "airlock/python:$BASE_REVISION" Dockerfile.python
build "airlock/gateway:$VERSION" Dockerfile.daemon --build-arg EXTRA=gateway --build-arg UID=10001 --build-arg NAME=gateway
build "airlock/executor:$VERSION" Dockerfile.daemon --build-arg EXTRA=executor --build-arg UID=10002 --build-arg NAME=executor
build "airlock/agent:$VERSION" Dockerfile.agent
build "airlock/opa:$VERSION" Dockerfile.opa
build "airlock/prometheus:$VERSION" Dockerfile.prometheus

for name in "airlock/gateway:$VERSION" "airlock/executor:$VERSION" "airlock/opa:$VERSION" "airlock/agent:$VERSION" \
  "airlock/prometheus:$VERSION"; do
  docker image inspect -f "{{index .RepoTags 0}} {{.Id}} {{.Size}}" "$name" \
    | awk '{ printf "%-28s %s %6.1f MB\n", $1, $2, $3 / 1000000 }'
done
