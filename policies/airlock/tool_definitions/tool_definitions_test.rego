package airlock.tool_definitions_test

import data.airlock.tool_definitions

settings := {"bases": ["python", "fetch", "shell"], "max_source_bytes": 100, "max_definitions": 3}

grants := {
	"profiles": {
		"default": {"tools": ["python", "shell", "define_tool"], "network": false, "tool_definitions": settings},
		"networked": {"tools": ["python", "fetch", "define_tool"], "network": true, "tool_definitions": settings},
		# May run promoted dynamic tools, but not define any.
		"users": {"tools": ["python"], "network": false, "tool_definitions": settings},
		"plain": {"tools": ["python", "define_tool"], "network": false},
		"empty": {"tools": ["python", "define_tool"], "network": false, "tool_definitions": {}},
		"broken": {
			"tools": ["python", "define_tool"], "network": false,
			"tool_definitions": {"bases": ["python"], "max_source_bytes": "100", "max_definitions": -1},
		},
	},
	"principals": {"ops-agent": {"tools": ["define_tool"]}},
}

# "shell" is granted but has no `dynamic`; "secret" is dynamic but granted to nobody.
registry := {
	"python": {"name": "python", "allowed_network": false, "dynamic": {"source": "code"}},
	"fetch": {
		"name": "fetch", "allowed_network": true, "egress_allowlist": ["api.example.com"],
		"dynamic": {"source": "code"},
	},
	"shell": {"name": "shell", "allowed_network": false},
	"secret": {"name": "secret", "allowed_network": false, "dynamic": {"source": "code"}},
}

sha := "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef"

definition := {
	"name": "summarize_csv", "description": "Summarize a CSV file.",
	"parameters": {"type": "object", "properties": {"path": {"type": "string"}}},
	"source": "import csv\nprint(1)\n", "base": "python", "network": false,
	"sha256": sha, "source_bytes": 20,
}

fetch_definition(source) := define("networked", {"base": "fetch", "network": true, "source": source})

define(profile, changes) := define_as("dev-agent", profile, changes)

define_as(principal, profile, changes) := {
	"op": "define",
	"principal": {"id": principal, "profile": profile, "roles": ["agent"]},
	"session_id": "s1",
	"definition": object.union(definition, changes),
	"owner_definitions": 0,
}

codes(d) := [r.code | some r in d.reasons]

test_admitted if {
	d := tool_definitions.decision with input as define("default", {})
		with data.airlock.grants as grants
		with data.registry.tools as registry
	d == {"allow": true, "reasons": [{
		"code": "admitted",
		"message": `tool "summarize_csv" on base "python" is admitted for principal "dev-agent"`,
		"package": "airlock.tool_definitions",
	}]}

	# Network where both the base and the profile have it.
	n := tool_definitions.decision with input as fetch_definition("import urllib.request\n")
		with data.airlock.grants as grants
		with data.registry.tools as registry
	n.allow

	# A principal's own grant of define_tool is enough.
	plain := tool_definitions.decision with input as define_as("ops-agent", "plain", {})
		with data.airlock.grants as grants
		with data.registry.tools as registry
	plain.allow == false # plain has no tool_definitions
	users := tool_definitions.decision with input as define_as("ops-agent", "users", {})
		with data.airlock.grants as grants
		with data.registry.tools as registry
	users.allow
}

# Every deny path, alone, with its message.
deny_path_cases := [
	{
		"doc": define("users", {}), "code": "tool_definitions_not_granted",
		"msg": `tool "define_tool" is not available to principal "dev-agent"`,
	},
	{
		"doc": define("plain", {}), "code": "tool_definitions_not_enabled",
		"msg": `profile "plain" does not enable dynamic tools (no tool_definitions)`,
	},
	{
		"doc": define("empty", {}), "code": "tool_definitions_not_enabled",
		"msg": `profile "empty" does not enable dynamic tools (no tool_definitions)`,
	},
	{
		"doc": define("default", {"base": "shell"}), "code": "base_not_dynamic",
		"msg": `base tool "shell" cannot run dynamic tools`,
	},
	{
		"doc": define("default", {"source_bytes": 101}), "code": "source_too_large",
		"msg": `source of tool "summarize_csv" has 101 bytes, at most 100`,
	},
	# The policy's own count wins over a smaller declared size (é is 2 bytes).
	{
		"doc": define("default", {"source": concat("", [s | some _ in numbers.range(1, 51); s := "é"])}),
		"code": "source_too_large", "msg": `source of tool "summarize_csv" has 102 bytes, at most 100`,
	},
	{
		"doc": object.union(define("default", {}), {"owner_definitions": 3}), "code": "too_many_definitions",
		"msg": `principal "dev-agent" owns 3 tool definitions, at most 3`,
	},
	{
		"doc": object.remove(define("default", {}), ["owner_definitions"]), "code": "too_many_definitions",
		"msg": "the number of tool definitions the principal owns is missing (owner_definitions)",
	},
	{
		"doc": define("default", {"network": true}), "code": "network_not_permitted",
		"msg": `tool "summarize_csv" asks for network, which base "python" and profile "default" do not both permit`,
	},
	{
		"doc": define("networked", {"network": true}), "code": "network_not_permitted",
		"msg": `tool "summarize_csv" asks for network, which base "python" and profile "networked" do not both permit`,
	},
	{
		"doc": define("default", {"source": "import os, socket as s\n"}), "code": "source_imports_network",
		"msg": `source of tool "summarize_csv" imports socket without network: true`,
	},
	{
		"doc": define("default", {"source": "__import__('os')"}), "code": "source_dynamic_import",
		"msg": `source of tool "summarize_csv" imports modules dynamically (__import__ or importlib) without network: true`,
	},
	{
		"doc": define("default", {"network": "false"}), "code": "definition_malformed",
		"msg": "tool definition is malformed: network must be a boolean",
	},
	{
		"doc": object.union(define("default", {}), {"op": "list"}), "code": "unsupported_op",
		"msg": `op "list" is not supported; expected "define" without a tool_definition`,
	},
]

test_deny_paths if {
	every c in deny_path_cases {
		d := tool_definitions.decision with input as c.doc
			with data.airlock.grants as grants
			with data.registry.tools as registry
		d.allow == false
		d.reasons == [{"code": c.code, "message": c.msg, "package": "airlock.tool_definitions"}]
	}
}

test_base_checks if {
	cases := [
		# Unregistered and ungranted bases look the same.
		{
			"base": "nope", "want": ["base_not_allowed", "base_not_granted"],
			"msg": `base tool "nope" is not available to principal "dev-agent"`,
		},
		{
			"base": "secret", "want": ["base_not_allowed", "base_not_granted"],
			"msg": `base tool "secret" is not available to principal "dev-agent"`,
		},
		# Granted and dynamic, but not listed in the profile's bases.
		{
			"base": "fetch", "want": ["base_not_allowed"],
			"msg": `profile "networked" does not allow dynamic tools on base "fetch"`,
		},
	]
	every c in cases {
		profile := "networked"
		g := object.union(grants, {"profiles": {"networked": {"tool_definitions": {"bases": ["python"]}}}})
		d := tool_definitions.decision with input as define(profile, {"base": c.base})
			with data.airlock.grants as g
			with data.registry.tools as registry
		codes(d) == c.want
		c.msg in [r.message | some r in d.reasons]
	}
}

test_unknown_profile if {
	# ops-agent's own grants include define_tool but no base.
	d := tool_definitions.decision with input as define_as("ops-agent", "nope", {})
		with data.airlock.grants as grants
		with data.registry.tools as registry
	codes(d) == ["base_not_granted", "tool_definitions_not_enabled"]
	{
		"code": "tool_definitions_not_enabled",
		"message": `principal "ops-agent" has unknown profile "nope", which enables no dynamic tools`,
		"package": "airlock.tool_definitions",
	} in d.reasons
}

test_invalid_limits_admit_nothing if {
	d := tool_definitions.decision with input as define("broken", {})
		with data.airlock.grants as grants
		with data.registry.tools as registry
	codes(d) == ["source_too_large", "too_many_definitions"]
}

test_network_imports_tripwire if {
	cases := [
		{"source": "import socket", "want": ["socket"]},
		{"source": "x = 1; import ssl", "want": ["ssl"]},
		{"source": "from http.client import HTTPConnection", "want": ["http"]},
		{"source": "import urllib.request\nimport requests", "want": ["requests", "urllib"]},
		{"source": "  from aiohttp import web", "want": ["aiohttp"]},
		{"source": "import json, httpx", "want": ["httpx"]},
		{"source": "import ftplib\nimport smtplib\nimport telnetlib", "want": ["ftplib", "smtplib", "telnetlib"]},
		# Not network modules, or not imports.
		{"source": "import csv\nimport sslx\nimport my_socket", "want": []},
		{"source": "# import socket\nprint('import socket')", "want": []},
		{"source": "from mysocket import x", "want": []},
	]
	every c in cases {
		sort(tool_definitions.network_imports(c.source)) == c.want
	}
}

test_network_definition_may_import_network if {
	networked := tool_definitions.decision with input as fetch_definition("import socket\nimport importlib")
		with data.airlock.grants as grants
		with data.registry.tools as registry
	networked.allow
	d := tool_definitions.decision with input as define("default", {"source": "import importlib"})
		with data.airlock.grants as grants
		with data.registry.tools as registry
	codes(d) == ["source_dynamic_import"]
}

all_keys := {"base", "description", "name", "network", "parameters", "sha256", "source", "source_bytes"}

test_malformed_definitions_deny if {
	cases := [
		{"doc": object.remove(define("default", {}), ["definition"]), "bad": all_keys},
		{"doc": object.union(define("default", {}), {"definition": "summarize_csv"}), "bad": all_keys},
		{
			"doc": object.union(object.remove(define("default", {}), ["definition"]), {"definition": {"name": "x"}}),
			"bad": all_keys - {"name"},
		},
		{
			"doc": define("default", {"sha256": "ABC", "source_bytes": 1.5, "parameters": []}),
			"bad": {"parameters", "sha256", "source_bytes"},
		},
		{
			"doc": define("default", {"name": "", "base": 7, "source": 7, "description": null}),
			"bad": {"base", "description", "name", "source"},
		},
	]
	every c in cases {
		d := tool_definitions.decision with input as c.doc
			with data.airlock.grants as grants
			with data.registry.tools as registry
		d.allow == false
		"definition_malformed" in codes(d)
		tool_definitions.bad_keys == c.bad with input as c.doc
			with data.airlock.grants as grants
			with data.registry.tools as registry
	}
	d := tool_definitions.decision with input as define("default", {"sha256": "ABC", "network": 0})
		with data.airlock.grants as grants
		with data.registry.tools as registry
	d.reasons == [{
		"code": "definition_malformed",
		"message": "tool definition is malformed: network must be a boolean, sha256 must be 64 lower-case hex digits",
		"package": "airlock.tool_definitions",
	}]
}

test_decision_always_defined if {
	every doc in [{}, {"op": "define"}, {"op": 1, "principal": null}] {
		d := tool_definitions.decision with input as doc
			with data.airlock.grants as grants
			with data.registry.tools as registry
		d.allow == false
		count(d.reasons) > 0
	}
	d := tool_definitions.decision with input as {}
	d.allow == false
}

# A call input (tool_definition present) is never a define request.
test_call_input_is_not_a_define_request if {
	doc := object.union(define("default", {}), {"tool_definition": definition})
	d := tool_definitions.decision with input as doc
		with data.airlock.grants as grants
		with data.registry.tools as registry
	d.allow == false
	"unsupported_op" in codes(d)
}

test_shipped_grants if {
	d := tool_definitions.decision with input as define("default", {})
		with data.registry.tools as registry
	d.allow
	u := tool_definitions.decision with input as define("untrusted", {})
		with data.registry.tools as registry
	codes(u) == ["tool_definitions_not_enabled", "tool_definitions_not_granted"]
	big := tool_definitions.decision with input as define("default", {"source_bytes": 16385})
		with data.registry.tools as registry
	codes(big) == ["source_too_large"]
}
