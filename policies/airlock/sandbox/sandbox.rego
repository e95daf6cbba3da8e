# Sandbox obligation: whether a call runs in its session's long-lived sandbox
# (files under /work persist between the session's calls) or in a fresh
# container (ephemeral, the default). A session sandbox is the looser mode:
# state, and anything a call leaves running, outlives the call. So every
# doubt (a tool without a session default, a profile without `sandbox`, no
# session id, a malformed duration) ends in ephemeral.
#
# The tool's default comes from the registry (data.registry.tools[t].sandbox),
# what a profile allows from grants (profiles.<p>.sandbox). The gateway sends
# facts about the session's live sandboxes as input.session; this package uses
# them for an optional per-profile call limit. decision.rego only hands the
# obligation to an allowed call.
package airlock.sandbox

import data.airlock.tools

# Both durations are 0 for ephemeral: nothing is kept alive. Also what
# decision.rego reports for a denied call.
ephemeral := {"mode": "ephemeral", "idle_ttl_ms": 0, "max_lifetime_ms": 0}

# METADATA
# scope: document
# title: Sandbox obligation
# description: >-
#   {"mode": "session", "idle_ttl_ms", "max_lifetime_ms"} when the call may
#   run in its session's sandbox, else ephemeral with both durations 0.
#   Always defined.
default obligation := {"mode": "ephemeral", "idle_ttl_ms": 0, "max_lifetime_ms": 0}

obligation := object.union({"mode": "session"}, session_sandbox)

# Every condition but "allowed" (decision.rego's), each failing toward
# ephemeral. tools.entry is defined only for a granted tool, so an ungranted
# one can never show its registry default here; a profile must say
# `sessions: true` in so many words.
session_sandbox := {"idle_ttl_ms": idle, "max_lifetime_ms": lifetime} if {
	tools.entry.sandbox.mode == "session"
	profile.sessions == true
	session_id != ""
	idle := duration("idle_ttl_ms", "max_idle_ttl_ms")
	lifetime := duration("max_lifetime_ms", "max_lifetime_ms")
}

# The tool's value, clamped by the profile's cap when it sets one. Undefined
# (so: ephemeral) when either is not a positive integer: the gateway rejects a
# session with a zero duration as malformed, which would fail every call of
# the tool instead of running it ephemeral.
duration(key, cap_key) := min({value, cap}) if {
	value := tools.entry.sandbox[key]
	positive_integer(value)
	cap := object.get(profile, cap_key, value)
	positive_integer(cap)
}

positive_integer(x) if {
	is_number(x)
	x > 0
	round(x) == x
}

# A profile without a `sandbox` key has sessions off and no caps. A `sandbox`
# that is not an object has no `sessions` either, so it is off too.
default profile := {}

profile := tools.profile.sandbox

default session_id := ""

session_id := input.call.session_id if is_string(input.call.session_id)

# --- Session facts -------------------------------------------------------------

# input.session.sandbox describes the live sandboxes of this principal's
# session: exists, count (one per container class), age_seconds of the
# oldest, and calls run in them so far. Older gateways and Decide may send no
# input.session at all; that reads as "no sandbox yet", so 0 calls.
default session_calls := 0

session_calls := n if {
	input.session.sandbox.exists == true
	n := input.session.sandbox.calls
	is_number(n)
}

# profiles.<p>.sandbox.max_session_calls bounds how much one sandbox may
# accumulate (files, background processes, whatever a call left behind) before
# the agent must start over in a fresh one. Only a call that would run in the
# session sandbox is refused: an ephemeral call of the same session starts
# clean anyway. `session_calls` counts the calls before this one, so reaching
# the limit already denies.
deny contains {"code": "session_call_limit", "message": msg, "package": "airlock.sandbox"} if {
	session_sandbox
	limit := profile.max_session_calls
	is_number(limit)
	session_calls >= limit
	msg := sprintf(
		"the session's sandbox has run %v calls, at most %v; start a new session",
		[session_calls, limit],
	)
}
