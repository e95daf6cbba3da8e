package airlock.tools_test

import data.airlock.tools

grants := {
	"profiles": {
		"default": {"tools": ["python", "shell", "ghost"]},
		"untrusted": {"tools": ["python"]},
	},
	"principals": {"ops-agent": {"tools": ["fetch"]}},
}

# "ghost" is granted but unregistered; "secret" is registered but granted to nobody.
registry := {
	"python": {"name": "python"},
	"shell": {"name": "shell"},
	"fetch": {"name": "fetch"},
	"secret": {"name": "secret"},
}

test_available_is_granted_and_registered if {
	cases := [
		{"principal": {"id": "dev-agent", "profile": "default"}, "want": {"python", "shell"}},
		{"principal": {"id": "dev-agent", "profile": "untrusted"}, "want": {"python"}},
		{"principal": {"id": "ops-agent", "profile": "untrusted"}, "want": {"python", "fetch"}},
		{"principal": {"id": "ops-agent", "profile": "no-such-profile"}, "want": {"fetch"}},
		{"principal": {"id": "dev-agent", "profile": "no-such-profile"}, "want": set()},
		{"principal": {}, "want": set()},
	]
	every c in cases {
		tools.available == c.want with input as {"principal": c.principal}
			with data.airlock.grants as grants
			with data.registry.tools as registry
	}
}

test_available_empty_without_registry if {
	tools.available == set() with input as {"principal": {"id": "dev-agent", "profile": "default"}}
		with data.airlock.grants as grants
}

test_entry_only_for_available_tool if {
	tools.entry == {"name": "python"} with input as {
		"principal": {"id": "dev-agent", "profile": "default"},
		"call": {"tool": "python"},
	}
		with data.airlock.grants as grants
		with data.registry.tools as registry

	every tool in ["secret", "ghost", "fetch", "nope"] {
		not tools.entry with input as {
			"principal": {"id": "dev-agent", "profile": "default"},
			"call": {"tool": tool},
		}
			with data.airlock.grants as grants
			with data.registry.tools as registry
	}
}

test_defaults_for_empty_input if {
	tools.name == "" with input as {}
	tools.principal_id == "" with input as {}
	tools.profile_name == "" with input as {}
	not tools.profile with input as {}
}

# --- Dynamic tools -------------------------------------------------------------

dynamic_registry := object.union(registry, {"python": {"name": "python", "dynamic": {"source": "code"}}})

dynamic_call(definition, arguments) := {
	"principal": {"id": "dev-agent", "profile": "default"},
	"call": {"tool": "summarize_csv", "arguments": arguments},
	"tool_definition": definition,
}

test_dynamic_call_uses_its_base if {
	doc := dynamic_call({"name": "summarize_csv", "base": "python", "source": "print(1)"}, {"path": "a.csv"})
	tools.dynamic with input as doc
	tools.name == "summarize_csv" with input as doc
	tools.registry_name == "python" with input as doc
	tools.entry == dynamic_registry.python with input as doc
		with data.airlock.grants as grants
		with data.registry.tools as dynamic_registry

	# What the base runs: the source in its dynamic.source argument.
	tools.arguments == {"code": "print(1)"} with input as doc
		with data.airlock.grants as grants
		with data.registry.tools as dynamic_registry
}

test_dynamic_call_without_a_usable_base if {
	cases := [
		{"definition": {"base": "secret"}, "registry_name": "secret"}, # not granted
		{"definition": {"base": 7}, "registry_name": ""},
		{"definition": "python", "registry_name": ""},
		{"definition": {}, "registry_name": ""},
	]
	every c in cases {
		doc := dynamic_call(c.definition, {"code": "x"})
		tools.registry_name == c.registry_name with input as doc
		not tools.entry with input as doc
			with data.airlock.grants as grants
			with data.registry.tools as dynamic_registry
		tools.arguments == {} with input as doc
			with data.airlock.grants as grants
			with data.registry.tools as dynamic_registry
	}
}

test_null_tool_definition_is_an_ordinary_call if {
	doc := {
		"principal": {"id": "dev-agent", "profile": "default"},
		"call": {"tool": "python", "arguments": {"code": "1"}},
		"tool_definition": null,
	}
	not tools.dynamic with input as doc
	tools.registry_name == "python" with input as doc
	tools.arguments == {"code": "1"} with input as doc
}

test_define_tool_is_listed_never_available if {
	g := object.union(grants, {"profiles": {"default": {"tools": ["python", "define_tool"]}}})
	r := object.union(registry, {"define_tool": {"name": "define_tool"}})
	principal := {"principal": {"id": "dev-agent", "profile": "default"}}
	tools.listed == {"python", "define_tool"} with input as principal
		with data.airlock.grants as g
		with data.registry.tools as r
	tools.available == {"python"} with input as principal
		with data.airlock.grants as g
		with data.registry.tools as r
	not tools.entry with input as object.union(principal, {"call": {"tool": "define_tool"}})
		with data.airlock.grants as g
		with data.registry.tools as r
}
