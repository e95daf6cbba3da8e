package airlock_test

import data.airlock

limit_keys := {"memory_bytes", "cpu_millis", "pids", "timeout_ms", "output_bytes", "tmpfs_bytes"}

caps := {
	"memory_bytes": 536870912, "cpu_millis": 1000, "pids": 128,
	"timeout_ms": 30000, "output_bytes": 1048576, "tmpfs_bytes": 67108864,
}

grants := {
	"profiles": {
		"default": {"tools": ["python", "shell", "fetch"], "network": false, "limits": caps},
		"networked": {"tools": ["python", "fetch"], "network": true, "limits": caps},
		"untrusted": {"tools": ["python"], "network": false, "limits": caps},
	},
	"principals": {"ops-agent": {"tools": ["python"]}},
}

registry := {
	"python": {
		"name": "python", "item_type": "function_call",
		"allowed_network": false, "egress_allowlist": [],
		"limits": {"memory_bytes": 268435456, "timeout_ms": 10000},
	},
	"shell": {
		"name": "shell", "item_type": "shell_call",
		"allowed_network": false, "egress_allowlist": [],
		"limits": {},
	},
	"fetch": {
		"name": "fetch", "item_type": "function_call",
		"allowed_network": true, "egress_allowlist": ["api.example.com"],
		"limits": {},
	},
}

call(profile, tool, overrides) := {
	"principal": {"id": "dev-agent", "profile": profile, "authn": "token"},
	"call": object.union(
		{
			"call_id": "call_1", "item_type": "function_call", "tool": tool,
			"arguments": {}, "arguments_errors": [], "arguments_bytes": 2,
			"session_id": "",
		},
		overrides,
	),
	"request": {"rpc": "Invoke", "decision_id": "d-1", "time": "2026-11-28T03:00:00Z"},
}

codes(d) := [r.code | some r in d.reasons]

test_allow if {
	d := airlock.decision with input as call("default", "python", {"requested_limits": {"timeout_ms": 5000}})
		with airlock.grants as grants
		with data.registry.tools as registry
	d == {
		"allow": true,
		"reasons": [{"code": "allowed", "message": `tool "python" is granted to principal "dev-agent"`}],
		"obligations": {
			"limits": object.union(caps, {"memory_bytes": 268435456, "timeout_ms": 5000}),
			"network": {"mode": "none", "egress_allowlist": []},
		},
	}
}

test_allow_with_egress if {
	d := airlock.decision with input as call("networked", "fetch", {})
		with airlock.grants as grants
		with data.registry.tools as registry
	d.allow
	d.obligations.network == {"mode": "egress", "egress_allowlist": ["api.example.com"]}
}

test_deny_paths if {
	cases := [
		{"doc": call("default", "nope", {}), "want": ["tool_not_granted"]},
		{"doc": call("untrusted", "shell", {"item_type": "shell_call"}), "want": ["tool_not_granted"]},
		{"doc": call("nope", "python", {}), "want": ["tool_not_granted", "unknown_profile"]},
		{"doc": call("default", "shell", {}), "want": ["item_type_mismatch"]},
		{"doc": call("default", "python", {"item_type": ""}), "want": ["item_type_mismatch"]},
		{"doc": call("default", "python", {"arguments_errors": ["code: required"]}), "want": ["arguments_invalid"]},
		{"doc": call("default", "fetch", {}), "want": ["network_not_permitted"]},
		{
			"doc": call("default", "shell", {"arguments_errors": ["x"]}),
			"want": ["arguments_invalid", "item_type_mismatch"],
		},
		# An ungranted tool yields nothing but tool_not_granted, whatever else is wrong.
		{
			"doc": call("untrusted", "fetch", {"item_type": "shell_call", "arguments_errors": ["x"]}),
			"want": ["tool_not_granted"],
		},
	]
	every c in cases {
		d := airlock.decision with input as c.doc
			with airlock.grants as grants
			with data.registry.tools as registry
		d.allow == false
		codes(d) == c.want
	}
}

test_unknown_profile_alone if {
	# Principal extras still grant the tool, so only the profile is at fault.
	doc := object.union(call("nope", "python", {}), {"principal": {"id": "ops-agent"}})
	d := airlock.decision with input as doc
		with airlock.grants as grants
		with data.registry.tools as registry
	d.allow == false
	d.reasons == [{"code": "unknown_profile", "message": `principal "ops-agent" has unknown profile "nope"`}]
	d.obligations.limits == {}
}

test_unknown_and_ungranted_tools_are_indistinguishable if {
	doc := call("untrusted", "fetch", {})
	ungranted := airlock.decision with input as doc
		with airlock.grants as grants
		with data.registry.tools as registry
	ungranted.reasons == [{
		"code": "tool_not_granted",
		"message": `tool "fetch" is not available to principal "dev-agent"`,
	}]

	# The whole document matches, not just the message: limits and network too.
	unknown := airlock.decision with input as doc
		with airlock.grants as grants
		with data.registry.tools as object.remove(registry, ["fetch"])
	ungranted == unknown
}

test_arguments_invalid_reports_first_error if {
	doc := call("default", "python", {"arguments_errors": ["code: required", "extra: not allowed"]})
	d := airlock.decision with input as doc
		with airlock.grants as grants
		with data.registry.tools as registry
	d.reasons == [{"code": "arguments_invalid", "message": `arguments for tool "python" are invalid: code: required`}]
}

test_denied_decision_keeps_obligations if {
	d := airlock.decision with input as call("default", "fetch", {"requested_limits": {"timeout_ms": 99999999}})
		with airlock.grants as grants
		with data.registry.tools as registry
	d.allow == false
	d.obligations.limits == caps
	d.obligations.network == {"mode": "none", "egress_allowlist": []}
}

test_decision_defined_for_empty_input if {
	# Once with the shipped grants and no registry at all, once with fixtures.
	bare := airlock.decision with input as {}
	fixtures := airlock.decision with input as {}
		with airlock.grants as grants
		with data.registry.tools as registry
	every d in [bare, fixtures] {
		d.allow == false
		count(d.reasons) > 0
		d.obligations == {"limits": {}, "network": {"mode": "none", "egress_allowlist": []}}
	}
}

test_granted_tools if {
	cases := [
		{"principal": {"id": "dev-agent", "profile": "default"}, "want": ["fetch", "python", "shell"]},
		{"principal": {"id": "dev-agent", "profile": "untrusted"}, "want": ["python"]},
		{"principal": {"id": "ops-agent", "profile": "nope"}, "want": ["python"]},
		{"principal": {}, "want": []},
	]
	every c in cases {
		granted := airlock.granted_tools with input as {"principal": c.principal}
			with airlock.grants as grants
			with data.registry.tools as registry
		granted == c.want
	}
}

# Effective limits are keyed by the profile's caps, so a shipped profile missing
# a key would leave that resource uncapped.
test_shipped_profiles_cap_every_limit if {
	count(airlock.grants.profiles) > 0
	every profile in airlock.grants.profiles {
		object.keys(profile.limits) == limit_keys
		is_boolean(profile.network)
	}
}
