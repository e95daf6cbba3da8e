# The worked examples of policies/README.md, each as a test, so the guide
# cannot drift from what the policy does. This folder holds tests only: the
# bundle leaves out *_test.rego, so nothing here reaches OPA in production.
# The package sits outside the bundle roots (airlock, registry) on purpose: a
# rule added here by mistake makes `opa build` fail instead of shipping.
package examples_test

# A principal's input, as the gateway sends it (trimmed to what the examples need).
call(principal, profile, tool, arguments) := {
	"principal": {"id": principal, "profile": profile, "authn": "token"},
	"call": {
		"call_id": "call_1", "item_type": "function_call", "tool": tool,
		"arguments": arguments, "arguments_errors": [], "arguments_bytes": 2, "session_id": "",
	},
	"counters": {"window_seconds": 3600, "session_calls": 0, "session_tool_calls": 0, "principal_tool_calls": 0},
}

codes(decision) := [r.code | some r in decision.reasons]

caps := {
	"memory_bytes": 536870912, "cpu_millis": 1000, "pids": 128,
	"timeout_ms": 30000, "output_bytes": 1048576, "tmpfs_bytes": 67108864,
}

# --- Example 1: grant a new tool to one agent ---------------------------------

example1_grants := {
	"profiles": {"default": {"tools": ["python", "shell"], "network": false, "limits": caps}},
	"principals": {"report-agent": {"tools": ["jq"]}},
}

example1_tools := {
	"python": {"name": "python", "item_type": "function_call", "allowed_network": false, "limits": {}},
	"shell": {"name": "shell", "item_type": "function_call", "allowed_network": false, "limits": {}},
	"jq": {"name": "jq", "item_type": "function_call", "allowed_network": false, "limits": {}},
}

test_example1_grant_a_tool_to_one_agent if {
	d := data.airlock.decision with input as call("report-agent", "default", "jq", {"filter": ".items"})
		with data.airlock.grants as example1_grants
		with data.registry.tools as example1_tools
	d.allow == true
	d.tool.name == "jq"

	# Another agent of the same profile does not get it.
	other := data.airlock.decision with input as call("dev-agent", "default", "jq", {"filter": ".items"})
		with data.airlock.grants as example1_grants
		with data.registry.tools as example1_tools
	codes(other) == ["tool_not_granted"]
}

# --- Example 2: restrict a fetch tool to *.wikipedia.org on 443 ---------------

example2_grants := {
	"profiles": {"researcher": {"tools": ["web_fetch"], "network": true, "limits": caps}},
	"principals": {},
}

example2_tools := {"web_fetch": {
	"name": "web_fetch", "item_type": "function_call", "limits": {},
	"allowed_network": true, "egress_allowlist": ["*.wikipedia.org:443"],
}}

fetch(url) := call("dev-agent", "researcher", "web_fetch", {"url": url})

test_example2_fetch_only_from_wikipedia if {
	ok := data.airlock.decision with input as fetch("https://en.wikipedia.org/wiki/Rego")
		with data.airlock.grants as example2_grants
		with data.registry.tools as example2_tools
	ok.allow == true
	ok.obligations.network == {
		"mode": "egress", "egress_allowlist": ["*.wikipedia.org:443"], "egress_allow_cidrs": [],
		"inspect": [], "http_rules": [], "secrets": [],
	}

	evil := data.airlock.decision with input as fetch("https://evil.example/")
		with data.airlock.grants as example2_grants
		with data.registry.tools as example2_tools
	evil.reasons == [{
		"code": "egress_destination_denied",
		"message": `argument "url" of tool "web_fetch" points at evil.example:443, which is not in the egress allowlist`,
		"package": "airlock.egress",
	}]

	loopback := data.airlock.decision with input as fetch("http://127.0.0.1:8080/")
		with data.airlock.grants as example2_grants
		with data.registry.tools as example2_tools
	loopback.reasons == [{
		"code": "egress_destination_denied",
		"message": `argument "url" of tool "web_fetch" points at 127.0.0.1, which is always denied (loopback)`,
		"package": "airlock.egress",
	}]
}

# --- Example 3: cap memory at 256m for untrusted principals -------------------

example3_grants := {
	"profiles": {
		"default": {"tools": ["python"], "network": false, "limits": caps},
		"untrusted": {"tools": ["python"], "network": false, "limits": object.union(caps, {"memory_bytes": 268435456})},
	},
	"principals": {},
}

# The tool itself asks for 1 GiB.
example3_tools := {"python": {
	"name": "python", "item_type": "function_call", "allowed_network": false,
	"limits": {"memory_bytes": 1073741824},
}}

test_example3_cap_memory_for_untrusted if {
	untrusted := data.airlock.decision with input as call("guest-agent", "untrusted", "python", {"code": "print(1)"})
		with data.airlock.grants as example3_grants
		with data.registry.tools as example3_tools
	untrusted.allow == true
	untrusted.obligations.limits.memory_bytes == 268435456 # clamped, not denied

	trusted := data.airlock.decision with input as call("dev-agent", "default", "python", {"code": "print(1)"})
		with data.airlock.grants as example3_grants
		with data.registry.tools as example3_tools
	trusted.obligations.limits.memory_bytes == 536870912
}
