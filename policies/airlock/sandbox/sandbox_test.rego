package airlock.sandbox_test

import data.airlock.sandbox

everything := ["python", "shell", "fetch", "zero", "negative", "fractional", "stringly", "partial", "upper"]

grants := {
	"profiles": {
		"open": {"tools": everything, "sandbox": {"sessions": true, "max_idle_ttl_ms": 1800000, "max_lifetime_ms": 14400000}},
		"tight": {"tools": ["python"], "sandbox": {"sessions": true, "max_idle_ttl_ms": 60000, "max_lifetime_ms": 120000}},
		"uncapped": {"tools": ["python", "partial"], "sandbox": {"sessions": true}},
		"idle-capped": {"tools": ["python"], "sandbox": {"sessions": true, "max_idle_ttl_ms": 60000}},
		"closed": {"tools": ["python"], "sandbox": {"sessions": false, "max_idle_ttl_ms": 60000}},
		"bare": {"tools": ["python"]},
		"stringly": {"tools": ["python"], "sandbox": {"sessions": "true"}},
		"flag": {"tools": ["python"], "sandbox": true},
		"zero-cap": {"tools": ["python"], "sandbox": {"sessions": true, "max_idle_ttl_ms": 0}},
		"string-cap": {"tools": ["python"], "sandbox": {"sessions": true, "max_lifetime_ms": "1h"}},
		"limited": {"tools": ["python", "shell"], "sandbox": {"sessions": true, "max_session_calls": 5}},
		"frozen": {"tools": ["python"], "sandbox": {"sessions": true, "max_session_calls": 0}},
		"odd-limit": {"tools": ["python"], "sandbox": {"sessions": true, "max_session_calls": "5"}},
		# `max_session_calls:` with no value in YAML.
		"null-limit": {"tools": ["python"], "sandbox": {"sessions": true, "max_session_calls": null}},
	},
	"principals": {},
}

session_default(idle, lifetime) := {"mode": "session", "idle_ttl_ms": idle, "max_lifetime_ms": lifetime}

registry := {
	# As deploy/tool_registry.yaml ships python: 10 min idle, 1 h lifetime.
	"python": {"name": "python", "sandbox": session_default(600000, 3600000)},
	"shell": {"name": "shell"},
	"fetch": {"name": "fetch", "sandbox": {"mode": "ephemeral", "idle_ttl_ms": 600000, "max_lifetime_ms": 3600000}},
	"zero": {"name": "zero", "sandbox": session_default(0, 3600000)},
	"negative": {"name": "negative", "sandbox": session_default(600000, -1)},
	"fractional": {"name": "fractional", "sandbox": session_default(1.5, 3600000)},
	"stringly": {"name": "stringly", "sandbox": session_default("600000", 3600000)},
	"partial": {"name": "partial", "sandbox": {"mode": "session", "idle_ttl_ms": 600000}},
	"upper": {"name": "upper", "sandbox": object.union(session_default(600000, 3600000), {"mode": "Session"})},
	"secret": {"name": "secret", "sandbox": session_default(600000, 3600000)},
}

ephemeral := {"mode": "ephemeral", "idle_ttl_ms": 0, "max_lifetime_ms": 0}

call(profile, tool, session_id) := {
	"principal": {"id": "agent", "profile": profile},
	"call": {"tool": tool, "session_id": session_id},
}

# input.session as the gateway sends it once the session has a live sandbox.
live(calls) := {"id": "s-1", "sandbox": {"exists": true, "count": 1, "age_seconds": 120, "calls": calls}}

test_obligation if {
	cases := [
		# Every condition holds; the profile caps are above the tool's values.
		{"profile": "open", "tool": "python", "session": "s-1", "want": session_default(600000, 3600000)},
		# Caps below the tool's values clamp both durations.
		{"profile": "tight", "tool": "python", "session": "s-1", "want": session_default(60000, 120000)},
		# A missing cap means the tool's value, per key.
		{"profile": "uncapped", "tool": "python", "session": "s-1", "want": session_default(600000, 3600000)},
		{"profile": "idle-capped", "tool": "python", "session": "s-1", "want": session_default(60000, 3600000)},
		# The tool's default is ephemeral: absent, said so, or a mode we do not know.
		{"profile": "open", "tool": "shell", "session": "s-1", "want": ephemeral},
		{"profile": "open", "tool": "fetch", "session": "s-1", "want": ephemeral},
		{"profile": "open", "tool": "upper", "session": "s-1", "want": ephemeral},
		# The profile does not allow sessions: off, absent, or not a real boolean/object.
		{"profile": "closed", "tool": "python", "session": "s-1", "want": ephemeral},
		{"profile": "bare", "tool": "python", "session": "s-1", "want": ephemeral},
		{"profile": "stringly", "tool": "python", "session": "s-1", "want": ephemeral},
		{"profile": "flag", "tool": "python", "session": "s-1", "want": ephemeral},
		{"profile": "nope", "tool": "python", "session": "s-1", "want": ephemeral},
		# No session to keep a sandbox for.
		{"profile": "open", "tool": "python", "session": "", "want": ephemeral},
		{"profile": "open", "tool": "python", "session": 7, "want": ephemeral},
		# A tool value that is missing, not positive or not an integer.
		{"profile": "open", "tool": "zero", "session": "s-1", "want": ephemeral},
		{"profile": "open", "tool": "negative", "session": "s-1", "want": ephemeral},
		{"profile": "open", "tool": "fractional", "session": "s-1", "want": ephemeral},
		{"profile": "open", "tool": "stringly", "session": "s-1", "want": ephemeral},
		{"profile": "open", "tool": "partial", "session": "s-1", "want": ephemeral},
		{"profile": "uncapped", "tool": "partial", "session": "s-1", "want": ephemeral},
		# A profile cap that is not a positive integer is not "no cap".
		{"profile": "zero-cap", "tool": "python", "session": "s-1", "want": ephemeral},
		{"profile": "string-cap", "tool": "python", "session": "s-1", "want": ephemeral},
		# An ungranted tool's registry default must not show through.
		{"profile": "open", "tool": "secret", "session": "s-1", "want": ephemeral},
		{"profile": "open", "tool": "missing", "session": "s-1", "want": ephemeral},
	]
	every c in cases {
		sandbox.obligation == c.want with input as call(c.profile, c.tool, c.session)
			with data.airlock.grants as grants
			with data.registry.tools as registry
	}
}

test_obligation_without_session_id_or_input if {
	docs := [{}, {"principal": {"id": "agent", "profile": "open"}, "call": {"tool": "python"}}]
	every doc in docs {
		sandbox.obligation == ephemeral with input as doc
			with data.airlock.grants as grants
			with data.registry.tools as registry
	}
}

messages := sort([r.message | some r in sandbox.deny])

# null stands for "no input.session at all".
with_facts(doc, null) := doc

with_facts(doc, facts) := object.union(doc, {"session": facts}) if facts != null

limit_message(calls) := sprintf("the session's sandbox has run %v calls, at most 5; start a new session", [calls])

test_session_call_limit if {
	cases := [
		# No facts (an older gateway, Decide) or no sandbox yet: nothing has run.
		{"profile": "limited", "tool": "python", "session": null, "want": []},
		{"profile": "limited", "tool": "python", "session": {"id": "s-1"}, "want": []},
		{
			"profile": "limited", "tool": "python",
			"session": object.union(live(9), {"sandbox": {"exists": false}}), "want": [],
		},
		# Below, at and above the limit: the count is of the calls before this one.
		{"profile": "limited", "tool": "python", "session": live(4), "want": []},
		{"profile": "limited", "tool": "python", "session": live(5), "want": [limit_message(5)]},
		{"profile": "limited", "tool": "python", "session": live(6), "want": [limit_message(6)]},
		# A non-numeric count reads as 0.
		{"profile": "limited", "tool": "python", "session": live("9"), "want": []},
		# A call that would run ephemeral does not use the sandbox, so it is not refused.
		{"profile": "limited", "tool": "shell", "session": live(9), "want": []},
		# Only profiles that set a numeric limit have one.
		{"profile": "open", "tool": "python", "session": live(1000000), "want": []},
		{"profile": "odd-limit", "tool": "python", "session": live(1000000), "want": []},
		{"profile": "null-limit", "tool": "python", "session": live(1000000), "want": []},
		# A zero limit refuses every session call, even the first.
		{
			"profile": "frozen", "tool": "python", "session": null,
			"want": ["the session's sandbox has run 0 calls, at most 0; start a new session"],
		},
	]
	every c in cases {
		doc := with_facts(call(c.profile, c.tool, "s-1"), c.session)
		messages == c.want with input as doc
			with data.airlock.grants as grants
			with data.registry.tools as registry
	}
}

# The same facts on a call without a session id, an ungranted tool or an
# unknown profile deny nothing (and so reveal nothing about the registry).
test_session_call_limit_needs_a_session_call if {
	docs := [
		object.union(call("limited", "python", ""), {"session": live(9)}),
		object.union(call("limited", "secret", "s-1"), {"session": live(9)}),
		object.union(call("nope", "python", "s-1"), {"session": live(9)}),
	]
	every doc in docs {
		messages == [] with input as doc
			with data.airlock.grants as grants
			with data.registry.tools as registry
	}
}

# A denied call still has an obligation here; decision.rego turns it into
# ephemeral because the call does not run.
test_deny_still_has_the_obligation if {
	doc := object.union(call("limited", "python", "s-1"), {"session": live(5)})
	sandbox.deny == {{
		"code": "session_call_limit",
		"message": limit_message(5),
		"package": "airlock.sandbox",
	}} with input as doc
		with data.airlock.grants as grants
		with data.registry.tools as registry
	sandbox.obligation == session_default(600000, 3600000) with input as doc
		with data.airlock.grants as grants
		with data.registry.tools as registry
}

test_ephemeral_is_the_default if {
	sandbox.ephemeral == ephemeral
	sandbox.obligation == ephemeral with input as {}
}

sandbox_keys := {"sessions", "max_idle_ttl_ms", "max_lifetime_ms", "max_session_calls"}

# A misspelt key would silently cap nothing, and a cap that is not a positive
# integer turns every session call ephemeral: check the shipped profiles.
test_shipped_profiles_sandbox_keys_are_well_formed if {
	data.airlock.grants.profiles["default"].sandbox == {
		"sessions": true, "max_idle_ttl_ms": 1800000,
		"max_lifetime_ms": 14400000,
	}
	data.airlock.grants.profiles.untrusted.sandbox == {"sessions": false}
	every profile in data.airlock.grants.profiles {
		every key, value in object.get(profile, "sandbox", {}) {
			key in sandbox_keys
			well_formed_sandbox_value(key, value)
		}
	}
}

well_formed_sandbox_value("sessions", value) if is_boolean(value)

well_formed_sandbox_value(key, value) if {
	key != "sessions"
	is_number(value)
	value > 0
	round(value) == value
}
