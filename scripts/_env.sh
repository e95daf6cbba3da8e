# Sourced by the scripts: where the pinned Go tools live. As root they go to
# /opt/airlock/tools, which the service users (OPA runs as its own uid) can
# reach; a user's own install stays in their home.
# shellcheck shell=bash
if [[ -z "${AIRLOCK_TOOLS:-}" ]]; then
  if [[ "$(id -u)" == "0" ]]; then
    AIRLOCK_TOOLS=/opt/airlock/tools
  else
    AIRLOCK_TOOLS="$HOME/.local/share/airlock/tools"
  fi
fi
export AIRLOCK_TOOLS
