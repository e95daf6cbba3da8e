# The computer rules through data.airlock.decision: every code reaches the
# decision with its package, the obligation is only ever true on an allow,
# and shadow mode cannot run a computer call without its section.
# (decision_test.rego beside decision.rego is at regal's file-length limit.)
package airlock.computer_test

import data.airlock

decision_grants := object.union(grants, {"profiles": {"desk": {"sandbox": {"sessions": true}}}})

no_ack := {"acknowledge_safety_checks": false}

test_computer_deny_paths_in_the_decision if {
	cases := [
		{"doc": call("bare", "computer", {"actions": []}), "want": ["computer_not_enabled"]},
		{"doc": call("clicks", "computer", {"actions": [{"type": "wait"}]}), "want": ["computer_action_not_allowed"]},
		{"doc": keypress(["CTRL", "L"]), "want": ["computer_key_denied"]},
		{"doc": actions([{"type": "type", "text": "javascript:alert(1)"}]), "want": ["computer_text_denied"]},
		{"doc": actions(["click"]), "want": ["computer_action_malformed"]},
		{
			"doc": object.union(actions(three), {"counters": {"session_computer_actions": 20}}),
			"want": ["computer_action_budget_exceeded"],
		},
		{"doc": safety("desk", [check]), "want": ["safety_checks_not_acknowledged"]},
		# With the core checks, sorted.
		{
			"doc": object.union(keypress(["F11"]), {"call": {"item_type": "function_call"}}),
			"want": ["computer_key_denied", "item_type_mismatch"],
		},
	]
	every c in cases {
		d := airlock.decision with input as c.doc
			with airlock.grants as decision_grants
			with data.registry.tools as registry
		d.allow == false
		d.tool == null
		[r.code | some r in d.reasons] == c.want
		{r.package | some r in d.reasons; startswith(r.code, "computer_")} in {set(), {"airlock.computer"}}
		d.obligations.computer == no_ack
		d.obligations.sandbox.mode == "ephemeral"
	}
}

test_computer_allow_in_the_decision if {
	d := airlock.decision with input as object.union(actions(every_action), {"call": {"session_id": "s-1"}})
		with airlock.grants as decision_grants
		with data.registry.tools as registry
	d.allow
	d.reasons == [{"code": "allowed", "message": `tool "computer" is granted to principal "desk-agent"`}]
	d.tool == registry.computer
	d.obligations.computer == no_ack
	d.obligations.sandbox == {"mode": "session", "idle_ttl_ms": 600000, "max_lifetime_ms": 3600000}
}

test_computer_obligation_in_the_decision if {
	cases := [
		# Acknowledged: allowed, and the agent is told to acknowledge.
		{"doc": safety("ack", [check]), "allow": true, "want": true},
		{"doc": safety("ack", []), "allow": true, "want": false},
		# Acknowledged but denied for something else: nothing is acknowledged.
		{
			"doc": call("ack", "computer", {
				"actions": [{"type": "keypress", "keys": ["F12"]}],
				"pending_safety_checks": [check],
			}),
			"allow": false, "want": false,
		},
		{"doc": safety("desk", [check]), "allow": false, "want": false},
	]
	every c in cases {
		d := airlock.decision with input as c.doc
			with airlock.grants as decision_grants
			with data.registry.tools as registry
		d.allow == c.allow
		d.obligations.computer == {"acknowledge_safety_checks": c.want}
	}
}

test_computer_not_enabled_is_never_shadowed if {
	d := airlock.decision with input as call("bare", "computer", bad)
		with airlock.grants as decision_grants
		with data.registry.tools as registry
		with airlock.config.shadow as {"all": true}
	d.allow == false
	[r.code | some r in d.reasons] == ["computer_not_enabled"]
}

# Shadowed, the safety rule only reports: the call runs, but nothing tells the
# agent to acknowledge the checks (the provider then refuses the next turn).
test_a_safety_check_is_never_shadowed if {
	# Shadowing it would run a call a human should look at, unacknowledged.
	d := airlock.decision with input as safety("desk", [check])
		with airlock.grants as decision_grants
		with data.registry.tools as registry
		with airlock.config.shadow as {"packages": ["airlock.computer"]}
	not d.allow
	[r.code | some r in d.reasons] == ["safety_checks_not_acknowledged"]
	d.obligations.computer == no_ack
}

test_ungranted_computer_tool_looks_unknown if {
	doc := object.union(call("other", "computer", bad), {"counters": {"session_computer_actions": 100000}})
	ungranted := airlock.decision with input as doc
		with airlock.grants as decision_grants
		with data.registry.tools as registry
	unknown := airlock.decision with input as doc
		with airlock.grants as decision_grants
		with data.registry.tools as object.remove(registry, ["computer"])
	ungranted == unknown
	[r.code | some r in ungranted.reasons] == ["tool_not_granted"]
}
