package airlock.budget_test

import data.airlock.budget

grants := {
	"profiles": {
		"capped": {
			"tools": ["python"],
			"budget": {"session_calls": 10, "session_tool_calls": 5, "principal_tool_calls": 100},
		},
		"partly": {"tools": ["python"], "budget": {"principal_tool_calls": 3}},
		"uncapped": {"tools": ["python"]},
		"odd": {"tools": ["python"], "budget": {"session_call": 1, "session_calls": "1"}},
		"frozen": {"tools": ["python"], "budget": {"session_calls": 0}},
	},
	"principals": {},
}

registry := {"python": {"name": "python"}, "secret": {"name": "secret"}}

call(profile, tool, counters) := {
	"principal": {"id": "agent", "profile": profile},
	"call": {"tool": tool},
	"counters": counters,
}

messages := sort([r.message | some r in budget.deny])

counters(session, tool, principal) := {
	"window_seconds": 3600,
	"session_calls": session, "session_tool_calls": tool, "principal_tool_calls": principal,
}

test_budget_exceeded if {
	cases := [
		# Below every limit.
		{"profile": "capped", "counters": counters(9, 4, 99), "want": []},
		# The counters count earlier calls, so reaching the limit denies this one.
		{
			"profile": "capped", "counters": counters(10, 4, 99),
			"want": ["budget session_calls exhausted: 10 calls in the last 3600 s, limit 10"],
		},
		{
			"profile": "capped", "counters": counters(3, 6, 99),
			"want": ["budget session_tool_calls exhausted: 6 calls in the last 3600 s, limit 5"],
		},
		{
			"profile": "capped", "counters": counters(0, 0, 100),
			"want": ["budget principal_tool_calls exhausted: 100 calls in the last 3600 s, limit 100"],
		},
		{
			"profile": "capped", "counters": counters(11, 5, 100),
			"want": [
				"budget principal_tool_calls exhausted: 100 calls in the last 3600 s, limit 100",
				"budget session_calls exhausted: 11 calls in the last 3600 s, limit 10",
				"budget session_tool_calls exhausted: 5 calls in the last 3600 s, limit 5",
			],
		},
		# Only the limits a profile sets apply.
		{"profile": "partly", "counters": counters(1000, 1000, 2), "want": []},
		{
			"profile": "partly", "counters": counters(0, 0, 3),
			"want": ["budget principal_tool_calls exhausted: 3 calls in the last 3600 s, limit 3"],
		},
		{"profile": "uncapped", "counters": counters(1000000, 1000000, 1000000), "want": []},
		# Unknown keys and non-numeric limits cap nothing (the shipped data is
		# checked below so this cannot happen by accident).
		{"profile": "odd", "counters": counters(5, 5, 5), "want": []},
		# A zero limit stops every call, even the first.
		{"profile": "frozen", "counters": {}, "want": ["budget session_calls exhausted: 0 calls, limit 0"]},
		# Absent or non-numeric counters count as 0; no window means none is named.
		{"profile": "capped", "counters": {}, "want": []},
		{"profile": "capped", "counters": {"session_calls": "99"}, "want": []},
		{
			"profile": "partly", "counters": {"principal_tool_calls": 7},
			"want": ["budget principal_tool_calls exhausted: 7 calls, limit 3"],
		},
	]
	every c in cases {
		messages == c.want with input as call(c.profile, "python", c.counters)
			with data.airlock.grants as grants
			with data.registry.tools as registry
	}
}

test_counters_may_be_absent if {
	cases := [
		{"profile": "frozen", "want": ["budget session_calls exhausted: 0 calls, limit 0"]},
		{"profile": "capped", "want": []},
	]
	every c in cases {
		messages == c.want with input as {"principal": {"id": "agent", "profile": c.profile}, "call": {"tool": "python"}}
			with data.airlock.grants as grants
			with data.registry.tools as registry
	}
}

# A spent budget must not reveal whether an ungranted tool exists, and an
# unknown profile has no budget to spend.
test_ungranted_tools_and_unknown_profiles_are_not_counted if {
	docs := [
		call("capped", "secret", counters(10, 10, 1000)),
		call("capped", "nope", counters(10, 10, 1000)),
		call("nope", "python", counters(10, 10, 1000)),
	]
	every doc in docs {
		messages == [] with input as doc
			with data.airlock.grants as grants
			with data.registry.tools as registry
	}
}

test_reason_shape if {
	budget.deny == {{
		"code": "budget_exceeded",
		"message": "budget session_tool_calls exhausted: 5 calls in the last 3600 s, limit 5",
		"package": "airlock.budget",
	}} with input as call("capped", "python", counters(0, 5, 0))
		with data.airlock.grants as grants
		with data.registry.tools as registry
}

test_shipped_budgets_are_well_formed if {
	data.airlock.grants.profiles["default"].budget == {
		"principal_calls": 2000, "session_calls": 500,
		"session_tool_calls": 200,
	}
	data.airlock.grants.profiles.untrusted.budget == {
		"principal_calls": 200, "session_calls": 50,
		"session_tool_calls": 20,
	}
	every profile in data.airlock.grants.profiles {
		every counter, limit in object.get(profile, "budget", {}) {
			counter in budget.counters
			is_number(limit)
			limit >= 0
		}
	}
}

# Session ids are the caller's to choose: every shipped profile must cap the
# principal as a whole, or a fresh session per call would have no limit.
test_every_shipped_profile_has_a_principal_wide_budget if {
	every profile in data.airlock.grants.profiles {
		is_number(profile.budget.principal_calls)
	}
}

test_principal_wide_budget if {
	grants_with_principal_cap := {"profiles": {"p": {"tools": ["python"], "budget": {"principal_calls": 5}}}}
	messages == ["budget principal_calls exhausted: 5 calls in the last 3600 s, limit 5"] with input as call(
		"p", "python",
		{"window_seconds": 3600, "principal_calls": 5, "session_calls": 0},
	)
		with data.airlock.grants as grants_with_principal_cap
		with data.registry.tools as registry
	messages == [] with input as call("p", "python", {"window_seconds": 3600, "principal_calls": 4})
		with data.airlock.grants as grants_with_principal_cap
		with data.registry.tools as registry
}
