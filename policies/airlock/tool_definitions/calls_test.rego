# Calls of dynamic tools, decided by data.airlock.decision: run as their base,
# network only when the definition asks, admission re-checked on every call.
package airlock.tool_definitions_test

import data.airlock

caps := {
	"memory_bytes": 536870912, "cpu_millis": 1000, "pids": 128,
	"timeout_ms": 30000, "output_bytes": 1048576, "tmpfs_bytes": 67108864,
}

ten_minutes_one_hour := {"mode": "session", "idle_ttl_ms": 600000, "max_lifetime_ms": 3600000}

ephemeral := {"mode": "ephemeral", "idle_ttl_ms": 0, "max_lifetime_ms": 0}

base_registry := {
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

reason_codes(reasons) := [r.code | some r in reasons]

dyn_settings := {"bases": ["python", "web_fetch", "sh"], "max_source_bytes": 1000, "max_definitions": 5}

# default may define tools; users may only run them (no define_tool); closed
# has no tool_definitions at all.
dyn_grants := {
	"profiles": {
		"default": {
			"tools": ["python", "shell", "web_fetch", "define_tool", "sh"], "network": false, "limits": caps,
			"budget": {"session_calls": 100},
			"sandbox": {"sessions": true, "max_idle_ttl_ms": 300000},
			"tool_definitions": dyn_settings,
		},
		"networked": {"tools": ["python", "web_fetch"], "network": true, "limits": caps, "tool_definitions": dyn_settings},
		"users": {"tools": ["python"], "network": false, "limits": caps, "tool_definitions": dyn_settings},
		"no_python": {"tools": ["shell"], "network": false, "limits": caps, "tool_definitions": dyn_settings},
		"closed": {"tools": ["python"], "network": false, "limits": caps},
	},
	"principals": {},
}

# A shell-like base, to show that a base's argument rules see the program.
dyn_registry := object.union(base_registry, {
	"python": {"dynamic": {"source": "code"}},
	"web_fetch": {"dynamic": {"source": "code"}},
	"sh": {
		"name": "sh", "item_type": "function_call", "allowed_network": false,
		"egress_allowlist": [], "limits": {}, "dynamic": {"source": "command"},
	},
})

summarize_csv := {
	"id": "tool_0123456789abcdef0123456789abcdef", "name": "summarize_csv", "base": "python",
	"scope": "session", "owner": "dev-agent", "description": "Summarize a CSV file.",
	"parameters": {"type": "object", "properties": {"path": {"type": "string"}}, "required": ["path"]},
	"source": "import csv, json, sys\nprint(1)\n", "network": false,
	"sha256": "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef", "source_bytes": 31,
}

dynamic_call(profile, changes) := object.union(
	call(profile, "summarize_csv", {"arguments": {"path": "data.csv"}}),
	{"tool_definition": object.union(summarize_csv, changes)},
)

no_network := {
	"mode": "none", "egress_allowlist": [], "egress_allow_cidrs": [],
	"inspect": [], "http_rules": [], "secrets": [],
}

test_dynamic_call_runs_as_its_base if {
	d := airlock.decision with input as dynamic_call("default", {})
		with airlock.grants as dyn_grants
		with data.registry.tools as dyn_registry
	d.allow
	d.reasons == [{"code": "allowed", "message": `tool "summarize_csv" is granted to principal "dev-agent"`}]
	d.tool == dyn_registry.python # the base's entry, which the gateway runs
	d.obligations.limits == object.union(caps, {"memory_bytes": 268435456, "timeout_ms": 10000})
	d.obligations.network == no_network
	d.obligations.sandbox == ephemeral # no session id

	# In a session, the base's session sandbox.
	s := airlock.decision with input as object.union(dynamic_call("default", {}), {"call": {"session_id": "s-1"}})
		with airlock.grants as dyn_grants
		with data.registry.tools as dyn_registry
	s.obligations.sandbox == object.union(ten_minutes_one_hour, {"idle_ttl_ms": 300000})
}

# The define-only checks do not apply to calls: a principal that may not
# define tools may still run one (promoted to its profile).
test_dynamic_call_without_define_tool if {
	d := airlock.decision with input as object.union(dynamic_call("users", {"scope": "profile:users"}), {"counters": {}})
		with airlock.grants as dyn_grants
		with data.registry.tools as dyn_registry
	d.allow
}

test_dynamic_call_network if {
	# Base with egress, definition without network: no egress at all.
	off := airlock.decision with input as dynamic_call("networked", {"base": "web_fetch"})
		with airlock.grants as dyn_grants
		with data.registry.tools as dyn_registry
	off.allow
	off.tool == dyn_registry.web_fetch
	off.obligations.network == no_network

	# With network: the base's egress, as for the base itself.
	on := airlock.decision with input as dynamic_call("networked", {"base": "web_fetch", "network": true})
		with airlock.grants as dyn_grants
		with data.registry.tools as dyn_registry
	on.allow
	on.obligations.network == {
		"mode": "egress", "egress_allowlist": ["api.example.com:443"], "egress_allow_cidrs": [],
		"inspect": [], "http_rules": [], "secrets": [],
	}

	# A profile without network: denied by both the core check and the re-check.
	closed := airlock.decision with input as dynamic_call("default", {"base": "web_fetch", "network": true})
		with airlock.grants as dyn_grants
		with data.registry.tools as dyn_registry
	{[r.code, r.package] | some r in closed.reasons} == {
		["network_not_permitted", "airlock"],
		["network_not_permitted", "airlock.tool_definitions"],
	}
	closed.obligations.network == no_network
}

test_dynamic_call_denials if {
	cases := [
		# The base is not granted: nothing of it shows, and the call never runs.
		{"doc": dynamic_call("no_python", {}), "want": ["base_not_granted", "tool_not_granted"]},
		{
			"doc": dynamic_call("default", {"base": "nope"}),
			"want": ["base_not_allowed", "base_not_granted", "tool_not_granted"],
		},
		# Granted but not a dynamic base.
		{
			"doc": dynamic_call("default", {"base": "shell"}),
			"want": ["base_not_allowed", "base_not_dynamic", "item_type_mismatch"],
		},
		# The profile no longer enables dynamic tools.
		{"doc": dynamic_call("closed", {}), "want": ["tool_definitions_not_enabled"]},
		{
			"doc": dynamic_call("nope", {}),
			"want": ["base_not_granted", "tool_definitions_not_enabled", "tool_not_granted", "unknown_profile"],
		},
		# The definition's source is checked again.
		{"doc": dynamic_call("default", {"source": "import socket\n"}), "want": ["source_imports_network"]},
		{"doc": dynamic_call("default", {"source": "importlib.import_module('os')"}), "want": ["source_dynamic_import"]},
		{"doc": dynamic_call("default", {"source_bytes": 1001}), "want": ["source_too_large"]},
		# A definition of another tool, or a malformed one, never runs.
		{"doc": dynamic_call("default", {"name": "other"}), "want": ["definition_malformed"]},
		{"doc": dynamic_call("default", {"network": "no"}), "want": ["definition_malformed"]},
		{
			"doc": object.union(call("default", "summarize_csv", {}), {"tool_definition": "python"}),
			"want": ["base_not_granted", "definition_malformed", "tool_not_granted"],
		},
		# Other packages still apply (here the budget).
		{
			"doc": object.union(dynamic_call("default", {}), {"counters": {"session_calls": 100}}),
			"want": ["budget_exceeded"],
		},
	]
	every c in cases {
		d := airlock.decision with input as c.doc
			with airlock.grants as dyn_grants
			with data.registry.tools as dyn_registry
		d.allow == false
		d.tool == null
		reason_codes(d.reasons) == c.want
	}
}

# Admission is re-checked under the policy of the day: a definition admitted
# under the old grants stops running once they no longer admit it.
test_dynamic_call_rechecks_admission if {
	doc := dynamic_call("default", {})
	current := airlock.decision with input as doc
		with airlock.grants as dyn_grants
		with data.registry.tools as dyn_registry
	current.allow

	smaller := airlock.decision with input as doc
		with airlock.grants as dyn_grants
		with airlock.grants.profiles.default.tool_definitions.max_source_bytes as 10
		with data.registry.tools as dyn_registry
	smaller.reasons == [{
		"code": "source_too_large",
		"message": `source of tool "summarize_csv" has 31 bytes, at most 10`,
		"package": "airlock.tool_definitions",
	}]

	no_bases := airlock.decision with input as doc
		with airlock.grants as dyn_grants
		with airlock.grants.profiles.default.tool_definitions.bases as ["sh"]
		with data.registry.tools as dyn_registry
	reason_codes(no_bases.reasons) == ["base_not_allowed"]

	# The base lost its `dynamic` in the registry.
	not_dynamic := airlock.decision with input as doc
		with airlock.grants as dyn_grants
		with data.registry.tools as object.union(base_registry, {"sh": dyn_registry.sh})
	reason_codes(not_dynamic.reasons) == ["base_not_dynamic"]
}

# Shadow mode can roll the re-check out report-only, but never runs a tool on
# a base the principal lacks.
test_dynamic_call_shadow_mode if {
	big := airlock.decision with input as dynamic_call("default", {"source_bytes": 1001})
		with airlock.grants as dyn_grants
		with data.registry.tools as dyn_registry
		with airlock.config.shadow as {"packages": ["airlock.tool_definitions"]}
	big.allow
	reason_codes(big.shadow) == ["source_too_large"]

	ungranted := airlock.decision with input as dynamic_call("no_python", {})
		with airlock.grants as dyn_grants
		with data.registry.tools as dyn_registry
		with airlock.config.shadow as {"all": true}
	ungranted.allow == false
	reason_codes(ungranted.reasons) == ["base_not_granted", "tool_not_granted"]
}

# A base's argument rules see what the base runs (the definition's source in
# its dynamic.source argument), never the dynamic tool's own arguments.
test_dynamic_call_argument_rules if {
	rules := {
		"tools": {"sh": {}},
		"deny_patterns": [{"id": "shadow_file", "pattern": `/etc/shadow`, "reason": "reads /etc/shadow"}],
	}
	bad := airlock.decision with input as dynamic_call("default", {"base": "sh", "source": "cat /etc/shadow"})
		with airlock.grants as dyn_grants
		with data.registry.tools as dyn_registry
		with airlock.arguments.shell as rules
	bad.reasons == [{
		"code": "argument_denied",
		"message": `argument "command" of tool "summarize_csv" denied: reads /etc/shadow (rule shadow_file)`,
		"package": "airlock.arguments",
	}]

	doc := object.union(
		dynamic_call("default", {"base": "sh", "source": "ls"}),
		{"call": {"arguments": {"command": "cat /etc/shadow"}}},
	)
	ok := airlock.decision with input as doc
		with airlock.grants as dyn_grants
		with data.registry.tools as dyn_registry
		with airlock.arguments.shell as rules
	ok.allow
}

# define_tool is listed when granted but is no base_registry tool: a call of it by
# that name (the gateway intercepts those) is never run from the registry.
test_define_tool_is_listed_but_never_an_entry if {
	granted := airlock.granted_tools with input as {"principal": {"id": "dev-agent", "profile": "default"}}
		with airlock.grants as dyn_grants
		with data.registry.tools as dyn_registry
	granted == ["define_tool", "python", "sh", "shell", "web_fetch"]

	d := airlock.decision with input as call("default", "define_tool", {})
		with airlock.grants as dyn_grants
		with data.registry.tools as object.union(dyn_registry, {"define_tool": base_registry.python})
	reason_codes(d.reasons) == ["tool_not_granted"]
	d.tool == null
}

test_shipped_profiles_and_dynamic_tools if {
	shipped := object.union(base_registry, {"python": {"dynamic": {"source": "code"}}})
	d := airlock.decision with input as dynamic_call("default", {})
		with data.registry.tools as shipped
	d.allow
	u := airlock.decision with input as object.union(dynamic_call("untrusted", {}), {"principal": {"id": "guest"}})
		with data.registry.tools as shipped
	reason_codes(u.reasons) == ["tool_definitions_not_enabled"]
	"define_tool" in airlock.grants.profiles.default.tools
	not "define_tool" in airlock.grants.profiles.untrusted.tools
}
