package airlock.limits_test

import data.airlock.limits

grants := {
	"profiles": {"default": {
		"tools": ["python", "shell"],
		"limits": {"memory_bytes": 512, "timeout_ms": 30000, "output_bytes": 1000},
	}},
	"principals": {},
}

registry := {
	"python": {"limits": {"memory_bytes": 256}},
	"shell": {"limits": {}},
	"secret": {"limits": {"memory_bytes": 1, "timeout_ms": 1, "output_bytes": 1}},
}

test_effective_limits if {
	profile_caps := {"memory_bytes": 512, "timeout_ms": 30000, "output_bytes": 1000}
	cases := [
		# No request: tool cap beats the larger profile cap; other keys get the profile cap.
		{"tool": "python", "req": {}, "want": object.union(profile_caps, {"memory_bytes": 256})},
		# A request above the cap is clamped to the cap, not denied.
		{"tool": "shell", "req": {"timeout_ms": 60000}, "want": profile_caps},
		# A request below the cap is kept.
		{
			"tool": "shell", "req": {"timeout_ms": 5000, "output_bytes": 10},
			"want": {"memory_bytes": 512, "timeout_ms": 5000, "output_bytes": 10},
		},
		# The tool cap wins over a larger request.
		{"tool": "python", "req": {"memory_bytes": 1024}, "want": object.union(profile_caps, {"memory_bytes": 256})},
		# Zero, negative and non-numeric requests are ignored, never "unlimited".
		{"tool": "shell", "req": {"timeout_ms": 0, "memory_bytes": -1, "output_bytes": "9"}, "want": profile_caps},
		# Keys the profile does not cap are not invented from the request.
		{"tool": "shell", "req": {"pids": 10}, "want": profile_caps},
		# An ungranted tool's registry caps must not show through.
		{"tool": "secret", "req": {}, "want": profile_caps},
	]
	every c in cases {
		limits.effective == c.want with input as {
			"principal": {"id": "dev-agent", "profile": "default"},
			"call": {"tool": c.tool, "requested_limits": c.req},
		}
			with data.airlock.grants as grants
			with data.registry.tools as registry
	}
}

test_effective_without_requested_limits if {
	limits.effective == {"memory_bytes": 256, "timeout_ms": 30000, "output_bytes": 1000} with input as {
		"principal": {"id": "dev-agent", "profile": "default"},
		"call": {"tool": "python"},
	}
		with data.airlock.grants as grants
		with data.registry.tools as registry
}

test_unknown_profile_has_no_limits if {
	limits.effective == {} with input as {"principal": {"id": "dev-agent", "profile": "nope"}, "call": {"tool": "python"}}
		with data.airlock.grants as grants
		with data.registry.tools as registry
}

test_a_profile_sets_other_caps_for_one_tool if {
	profile := {
		"tools": ["computer", "python"],
		"limits": {"memory_bytes": 100, "pids": 10},
		"tool_limits": {"computer": {"memory_bytes": 500, "pids": "lots"}},
	}
	registry := {
		"computer": {"name": "computer", "limits": {"memory_bytes": 400}},
		"python": {"name": "python", "limits": {}},
	}
	grants := {"profiles": {"p": profile}, "principals": {}}
	computer := limits.effective with input as {"principal": {"id": "a", "profile": "p"}, "call": {"tool": "computer"}}
		with data.airlock.grants as grants
		with data.registry.tools as registry
	computer == {"memory_bytes": 400, "pids": 10}
	python := limits.effective with input as {"principal": {"id": "a", "profile": "p"}, "call": {"tool": "python"}}
		with data.airlock.grants as grants
		with data.registry.tools as registry
	python == {"memory_bytes": 100, "pids": 10}
}
