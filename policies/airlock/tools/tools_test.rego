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
