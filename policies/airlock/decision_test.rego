package airlock_test

import data.airlock

limit_keys := {"memory_bytes", "cpu_millis", "pids", "timeout_ms", "output_bytes", "tmpfs_bytes"}

caps := {
	"memory_bytes": 536870912, "cpu_millis": 1000, "pids": 128,
	"timeout_ms": 30000, "output_bytes": 1048576, "tmpfs_bytes": 67108864,
}

grants := {
	"profiles": {
		"default": {
			"tools": ["python", "shell", "web_fetch"], "network": false, "limits": caps,
			"budget": {"session_calls": 100},
			"sandbox": {"sessions": true, "max_idle_ttl_ms": 300000, "max_session_calls": 50},
		},
		"networked": {"tools": ["python", "web_fetch"], "network": true, "limits": caps},
		"untrusted": {"tools": ["python"], "network": false, "limits": caps},
	},
	"principals": {"ops-agent": {"tools": ["python"]}},
}

registry := {
	"python": {
		"name": "python", "item_type": "function_call",
		"allowed_network": false, "egress_allowlist": [],
		"limits": {"memory_bytes": 268435456, "timeout_ms": 10000},
		"sandbox": ten_minutes_one_hour,
	},
	"shell": {
		"name": "shell", "item_type": "shell_call",
		"allowed_network": false, "egress_allowlist": [],
		"limits": {},
	},
	"web_fetch": {
		"name": "web_fetch", "item_type": "function_call",
		"allowed_network": true, "egress_allowlist": ["api.example.com", "127.0.0.1"],
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

shell(command) := call("default", "shell", {"item_type": "shell_call", "arguments": {"command": command}})

codes(reasons) := [r.code | some r in reasons]

no_shadow := {"all": false, "packages": [], "codes": []}

ephemeral := {"mode": "ephemeral", "idle_ttl_ms": 0, "max_lifetime_ms": 0}

no_artifacts := {
	"max_outputs": 0, "max_output_bytes": 0, "max_output_file_bytes": 0,
	"max_inputs": 0, "max_input_bytes": 0,
}

# Every decision but a computer call's with acknowledged safety checks.
no_computer := {"acknowledge_safety_checks": false}

no_network := {
	"mode": "none", "egress_allowlist": [], "egress_allow_cidrs": [],
	"inspect": [], "http_rules": [], "secrets": [],
}

# The registry default deploy/tool_registry.yaml gives python and shell.
ten_minutes_one_hour := {"mode": "session", "idle_ttl_ms": 600000, "max_lifetime_ms": 3600000}

# A python call in session s-1, whose sandbox has already run `calls` calls.
in_session(calls) := object.union(
	call("default", "python", {"session_id": "s-1"}),
	{"session": {"id": "s-1", "sandbox": {"exists": true, "count": 1, "age_seconds": 60, "calls": calls}}},
)

test_allow if {
	d := airlock.decision with input as call("default", "python", {"requested_limits": {"timeout_ms": 5000}})
		with airlock.grants as grants
		with data.registry.tools as registry
	d == {
		"allow": true,
		"ask": false,
		"reasons": [{"code": "allowed", "message": `tool "python" is granted to principal "dev-agent"`}],
		"shadow": [],
		"shadow_asks": [],
		"obligations": {
			"limits": object.union(caps, {"memory_bytes": 268435456, "timeout_ms": 5000}),
			"network": no_network,
			"sandbox": ephemeral, # no session id
			"artifacts": no_artifacts, # python here declares none
			"computer": no_computer,
		},
		"tool": registry.python,
	}
}

test_allow_with_egress if {
	doc := call("networked", "web_fetch", {"arguments": {"url": "https://api.example.com/v1"}})
	d := airlock.decision with input as doc
		with airlock.grants as grants
		with data.registry.tools as registry
	d.allow
	d.tool == registry.web_fetch

	# Normalized, with the loopback literal dropped from the obligation.
	d.obligations.network == {
		"mode": "egress", "egress_allowlist": ["api.example.com:443"], "egress_allow_cidrs": [],
		"inspect": [], "http_rules": [], "secrets": [],
	}
}

# Every deny code the policy can produce, each with the package that owns it.
test_deny_paths if {
	cases := [
		{"doc": call("default", "nope", {}), "want": ["tool_not_granted"]},
		{"doc": call("untrusted", "shell", {"item_type": "shell_call"}), "want": ["tool_not_granted"]},
		{"doc": call("nope", "python", {}), "want": ["tool_not_granted", "unknown_profile"]},
		{"doc": call("default", "shell", {}), "want": ["item_type_mismatch"]},
		{"doc": call("default", "python", {"item_type": ""}), "want": ["item_type_mismatch"]},
		{"doc": call("default", "python", {"arguments_errors": ["code: required"]}), "want": ["arguments_invalid"]},
		{"doc": call("default", "web_fetch", {}), "want": ["network_not_permitted"]},
		{"doc": shell("cat /etc/shadow"), "want": ["argument_denied"]},
		{
			"doc": call("networked", "web_fetch", {"arguments": {"url": "https://evil.example/"}}),
			"want": ["egress_destination_denied"],
		},
		{
			"doc": object.union(call("default", "python", {}), {"counters": {"session_calls": 100}}),
			"want": ["budget_exceeded"],
		},
		{"doc": in_session(50), "want": ["session_call_limit"]},
		{
			"doc": call("default", "shell", {"arguments_errors": ["x"]}),
			"want": ["arguments_invalid", "item_type_mismatch"],
		},
		# Reasons from several packages are merged and sorted.
		{
			"doc": object.union(shell("rm -rf /"), {"counters": {"session_calls": 100}, "call": {"item_type": "x"}}),
			"want": ["argument_denied", "budget_exceeded", "item_type_mismatch"],
		},
		# An ungranted tool yields nothing but tool_not_granted, whatever else is wrong.
		{
			"doc": object.union(
				call("untrusted", "shell", {"arguments_errors": ["x"], "arguments": {"command": "rm -rf /"}}),
				{"counters": {"session_calls": 100000}},
			),
			"want": ["tool_not_granted"],
		},
	]
	every c in cases {
		d := airlock.decision with input as c.doc
			with airlock.grants as grants
			with data.registry.tools as registry
		d.allow == false
		d.tool == null
		d.shadow == []
		codes(d.reasons) == c.want
		d.obligations.sandbox == ephemeral # a denied call runs nowhere
	}
}

test_codes_from_optional_rules if {
	# Rules the shipped data does not enable: a program allow-list and a file tool.
	allow_list := {"tools": {"shell": {"programs": ["ls"]}}, "deny_patterns": []}
	d := airlock.decision with input as shell("ls; id")
		with airlock.grants as grants
		with data.registry.tools as registry
		with airlock.arguments.shell as allow_list
	codes(d.reasons) == ["program_not_allowed"]

	files := object.union(grants, {"profiles": {"default": {"tools": ["read_file"]}}})
	reader := {"name": "read_file", "item_type": "function_call", "allowed_network": false, "limits": {}}
	f := airlock.decision with input as call("default", "read_file", {"arguments": {"path": "/etc/passwd"}})
		with airlock.grants as files
		with data.registry.tools as object.union(registry, {"read_file": reader})
		with airlock.arguments.files.tools as {"read_file": ["path"]}
	codes(f.reasons) == ["path_outside_workdir"]

	g := airlock.decision with input as call("default", "read_file", {"arguments": {"path": ".git/config"}})
		with airlock.grants as files
		with data.registry.tools as object.union(registry, {"read_file": reader})
		with airlock.arguments.files.tools as {"read_file": ["path"]}
	codes(g.reasons) == ["path_protected"]

	long := concat("", array.concat(["a"], [s | some _ in numbers.range(1, 300); s := "/b"]))
	h := airlock.decision with input as call("default", "read_file", {"arguments": {"path": long}})
		with airlock.grants as files
		with data.registry.tools as object.union(registry, {"read_file": reader})
		with airlock.arguments.files.tools as {"read_file": ["path"]}
	codes(h.reasons) == ["path_too_long"]
}

test_reasons_name_their_package if {
	doc := object.union(shell("rm -rf /"), {"counters": {"session_calls": 100}, "call": {"item_type": "x"}})
	d := airlock.decision with input as doc
		with airlock.grants as grants
		with data.registry.tools as registry
	{[r.code, r.package] | some r in d.reasons} == {
		["argument_denied", "airlock.arguments"],
		["budget_exceeded", "airlock.budget"],
		["item_type_mismatch", "airlock"],
	}

	e := airlock.decision with input as call("networked", "web_fetch", {"arguments": {"url": "https://127.0.0.1/"}})
		with airlock.grants as grants
		with data.registry.tools as registry
	[r.package | some r in e.reasons] == ["airlock.egress"]
}

test_shadow_mode if {
	bad_shell := object.union(shell("cat /etc/shadow"), {"counters": {"session_calls": 100}})
	cases := [
		# Nothing shadowed: both reasons enforce.
		{
			"shadow": no_shadow, "doc": bad_shell,
			"allow": false, "reasons": ["argument_denied", "budget_exceeded"], "would": [],
		},
		# Everything shadowed: the call goes through and reports what it would deny.
		{
			"shadow": {"all": true}, "doc": bad_shell,
			"allow": true, "reasons": ["allowed"], "would": ["argument_denied", "budget_exceeded"],
		},
		# By package and by code, each shadowing only its own reasons.
		{
			"shadow": {"packages": ["airlock.arguments"]}, "doc": bad_shell,
			"allow": false, "reasons": ["budget_exceeded"], "would": ["argument_denied"],
		},
		{
			"shadow": {"codes": ["budget_exceeded"]}, "doc": bad_shell,
			"allow": false, "reasons": ["argument_denied"], "would": ["budget_exceeded"],
		},
		{
			"shadow": {"packages": ["airlock.budget"], "codes": ["argument_denied"]}, "doc": bad_shell,
			"allow": true, "reasons": ["allowed"], "would": ["argument_denied", "budget_exceeded"],
		},
		# Core checks can be shadowed too...
		{
			"shadow": {"packages": ["airlock"]}, "doc": call("default", "shell", {}),
			"allow": true, "reasons": ["allowed"], "would": ["item_type_mismatch"],
		},
		# ...except the grant itself: report-only never runs an ungranted tool.
		{
			"shadow": {"all": true, "codes": ["tool_not_granted", "unknown_profile"]},
			"doc": call("nope", "shell", {}),
			"allow": false, "reasons": ["tool_not_granted", "unknown_profile"], "would": [],
		},
		{
			"shadow": {"all": true}, "doc": call("untrusted", "shell", {"item_type": "shell_call"}),
			"allow": false, "reasons": ["tool_not_granted"], "would": [],
		},
		# A config of the wrong shape shadows nothing.
		{
			"shadow": {"all": "true", "packages": "airlock.arguments", "codes": "argument_denied"}, "doc": bad_shell,
			"allow": false, "reasons": ["argument_denied", "budget_exceeded"], "would": [],
		},
		{"shadow": null, "doc": bad_shell, "allow": false, "reasons": ["argument_denied", "budget_exceeded"], "would": []},
	]
	every c in cases {
		d := airlock.decision with input as c.doc
			with airlock.grants as grants
			with data.registry.tools as registry
			with airlock.config.shadow as c.shadow
		d.allow == c.allow
		codes(d.reasons) == c.reasons
		codes(d.shadow) == c.would
	}
}

test_shadowed_allow_is_a_normal_allow if {
	d := airlock.decision with input as shell("cat /etc/shadow")
		with airlock.grants as grants
		with data.registry.tools as registry
		with airlock.config.shadow as {"codes": ["argument_denied"]}
	d.allow
	d.reasons == [{"code": "allowed", "message": `tool "shell" is granted to principal "dev-agent"`}]
	d.shadow == [{
		"code": "argument_denied",
		"message": `argument "command" of tool "shell" denied: reads the password hashes in /etc/shadow (rule shadow_file)`,
		"package": "airlock.arguments",
	}]
	d.tool == registry.shell
	object.keys(d.obligations.limits) == limit_keys
}

test_shipped_config_enforces_everything if {
	airlock.config.shadow == no_shadow
}

test_unknown_profile_alone if {
	# Principal extras still grant the tool, so only the profile is at fault.
	doc := object.union(call("nope", "python", {}), {"principal": {"id": "ops-agent"}})
	d := airlock.decision with input as doc
		with airlock.grants as grants
		with data.registry.tools as registry
	d.allow == false
	d.reasons == [{
		"code": "unknown_profile",
		"message": `principal "ops-agent" has unknown profile "nope"`,
		"package": "airlock",
	}]
	d.obligations.limits == {}
	d.tool == null
}

test_unknown_and_ungranted_tools_are_indistinguishable if {
	doc := object.union(
		call("untrusted", "web_fetch", {"arguments": {"url": "https://127.0.0.1/"}}),
		{"counters": {"session_calls": 100000}},
	)
	ungranted := airlock.decision with input as doc
		with airlock.grants as grants
		with data.registry.tools as registry
	ungranted.reasons == [{
		"code": "tool_not_granted",
		"message": `tool "web_fetch" is not available to principal "dev-agent"`,
		"package": "airlock",
	}]
	ungranted.tool == null

	# The whole document matches, not just the message: limits, network, shadow, tool.
	unknown := airlock.decision with input as doc
		with airlock.grants as grants
		with data.registry.tools as object.remove(registry, ["web_fetch"])
	ungranted == unknown
}

test_arguments_invalid_reports_first_error if {
	doc := call("default", "python", {"arguments_errors": ["code: required", "extra: not allowed"]})
	d := airlock.decision with input as doc
		with airlock.grants as grants
		with data.registry.tools as registry
	d.reasons == [{
		"code": "arguments_invalid",
		"message": `arguments for tool "python" are invalid: code: required`,
		"package": "airlock",
	}]
}

test_denied_decision_keeps_obligations if {
	d := airlock.decision with input as call("default", "web_fetch", {"requested_limits": {"timeout_ms": 99999999}})
		with airlock.grants as grants
		with data.registry.tools as registry
	d.allow == false
	d.obligations.limits == caps
	d.obligations.network == no_network
	d.tool == null
}

test_decision_defined_for_empty_input if {
	# Once with the shipped data and no registry at all, once with fixtures.
	bare := airlock.decision with input as {}
	fixtures := airlock.decision with input as {}
		with airlock.grants as grants
		with data.registry.tools as registry
	every d in [bare, fixtures] {
		d.allow == false
		codes(d.reasons) == ["tool_not_granted", "unknown_profile"]
		d.shadow == []
		d.tool == null
		d.obligations == {
			"limits": {},
			"network": no_network,
			"sandbox": ephemeral,
			"artifacts": no_artifacts,
			"computer": no_computer,
		}
	}
}

test_granted_tools if {
	cases := [
		{"principal": {"id": "dev-agent", "profile": "default"}, "want": ["python", "shell", "web_fetch"]},
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

# --- Sandboxes -----------------------------------------------------------------

# Every decision carries a sandbox obligation of exactly this shape, so the
# gateway never has to guess: allowed or denied, granted or not, any input.
test_sandbox_obligation_always_present if {
	docs := [
		{},
		call("default", "python", {}),
		call("default", "python", {"session_id": "s-1"}),
		call("default", "nope", {"session_id": "s-1"}),
		call("nope", "python", {"session_id": "s-1"}),
		call("default", "shell", {"session_id": "s-1"}),
		in_session(50),
	]
	every doc in docs {
		d := airlock.decision with input as doc
			with airlock.grants as grants
			with data.registry.tools as registry
		object.keys(d.obligations) == {"limits", "network", "sandbox", "artifacts", "computer"}
		d.obligations.computer == no_computer
		object.keys(d.obligations.artifacts) == object.keys(no_artifacts)
		object.keys(d.obligations.sandbox) == {"mode", "idle_ttl_ms", "max_lifetime_ms"}
		d.obligations.sandbox.mode in {"ephemeral", "session"}
		is_number(d.obligations.sandbox.idle_ttl_ms)
		is_number(d.obligations.sandbox.max_lifetime_ms)
	}
}

test_sandbox_obligation_in_the_decision if {
	# The profile caps the idle ttl (5 min < the tool's 10) but not the lifetime.
	capped := object.union(ten_minutes_one_hour, {"idle_ttl_ms": 300000})
	cases := [
		{"doc": in_session(49), "allow": true, "want": capped},
		{"doc": call("default", "python", {"session_id": "s-1"}), "allow": true, "want": capped},
		# The shell fixture has no sandbox default; untrusted has no sandbox key.
		{
			"doc": call("default", "shell", {"session_id": "s-1", "item_type": "shell_call", "arguments": {"command": "ls"}}),
			"allow": true, "want": ephemeral,
		},
		{"doc": call("untrusted", "python", {"session_id": "s-1"}), "allow": true, "want": ephemeral},
		# Denied by the limit, or by anything else: no sandbox is kept for it.
		{"doc": in_session(50), "allow": false, "want": ephemeral},
		{"doc": call("default", "python", {"session_id": "s-1", "item_type": "x"}), "allow": false, "want": ephemeral},
	]
	every c in cases {
		d := airlock.decision with input as c.doc
			with airlock.grants as grants
			with data.registry.tools as registry
		d.allow == c.allow
		d.obligations.sandbox == c.want
	}
}

# Shadowed, the limit only reports: the call runs, in its session's sandbox.
test_session_call_limit_in_shadow_mode if {
	d := airlock.decision with input as in_session(50)
		with airlock.grants as grants
		with data.registry.tools as registry
		with airlock.config.shadow as {"packages": ["airlock.sandbox"]}
	d.allow
	d.shadow == [{
		"code": "session_call_limit",
		"message": "the session's sandbox has run 50 calls, at most 50; start a new session",
		"package": "airlock.sandbox",
	}]
	d.obligations.sandbox == object.union(ten_minutes_one_hour, {"idle_ttl_ms": 300000})
}

# The shipped grants with the registry defaults deploy/tool_registry.yaml sets
# for python and shell; the default profile's caps (30 min, 4 h) are above them.
shipped_registry := object.union(registry, {
	"python": {"sandbox": ten_minutes_one_hour},
	"shell": {"sandbox": ten_minutes_one_hour},
})

test_shipped_profiles_sandbox_obligation if {
	cases := [
		{"doc": call("default", "python", {"session_id": "s-1"}), "want": ten_minutes_one_hour},
		{
			"doc": call("default", "shell", {"session_id": "s-1", "item_type": "shell_call", "arguments": {"command": "ls"}}),
			"want": ten_minutes_one_hour,
		},
		{"doc": call("default", "python", {}), "want": ephemeral},
		{"doc": call("untrusted", "python", {"session_id": "s-1"}), "want": ephemeral},
		# Nothing in the shipped profiles limits a session's calls.
		{"doc": object.union(in_session(1000000), {"counters": {}}), "want": ten_minutes_one_hour},
	]
	every c in cases {
		d := airlock.decision with input as c.doc
			with data.registry.tools as shipped_registry
		d.allow
		d.obligations.sandbox == c.want
	}
}
