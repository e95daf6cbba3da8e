package airlock.network_test

import data.airlock.network

grants := {
	"profiles": {
		"open": {"tools": ["fetch", "python"], "network": true},
		"closed": {"tools": ["fetch", "python"], "network": false},
		"unset": {"tools": ["fetch", "python"]},
		"stringly": {"tools": ["fetch", "python"], "network": "true"},
		"open-no-fetch": {"tools": ["python"], "network": true},
	},
	"principals": {},
}

registry := {
	"fetch": {"allowed_network": true, "egress_allowlist": ["api.example.com"]},
	"internal": {
		"allowed_network": true,
		"egress_allowlist": ["api.internal.test:8080"],
		"egress_allow_cidrs": ["10.1.0.0/16", "not-a-cidr", 7],
	},
	"python": {"allowed_network": false, "egress_allowlist": ["ignored.example.com"]},
	"bare": {"allowed_network": true},
}

none := {
	"mode": "none", "egress_allowlist": [], "egress_allow_cidrs": [],
	"inspect": [], "http_rules": [], "secrets": [],
}

test_network_obligation if {
	cases := [
		# Normalized by airlock.egress: no port means 443.
		{"profile": "open", "tool": "fetch", "want": {
			"mode": "egress", "egress_allowlist": ["api.example.com:443"],
			"egress_allow_cidrs": [], "inspect": [], "http_rules": [], "secrets": [],
		}},
		{"profile": "open", "tool": "python", "want": none},
		{"profile": "closed", "tool": "fetch", "want": none},
		{"profile": "unset", "tool": "fetch", "want": none},
		{"profile": "stringly", "tool": "fetch", "want": none},
		# Ungranted: the tool's allowlist must not leak.
		{"profile": "open-no-fetch", "tool": "fetch", "want": none},
		{"profile": "nope", "tool": "fetch", "want": none},
	]
	every c in cases {
		network.obligation == c.want with input as {
			"principal": {"id": "agent", "profile": c.profile},
			"call": {"tool": c.tool},
		}
			with data.airlock.grants as grants
			with data.registry.tools as registry
	}
}

# Only valid CIDRs pass through; a closed profile gets none of them.
test_allow_cidrs_from_the_registry if {
	network.obligation == {
		"mode": "egress", "egress_allowlist": ["api.internal.test:8080"],
		"egress_allow_cidrs": ["10.1.0.0/16"], "inspect": [], "http_rules": [], "secrets": [],
	} with input as {"principal": {"id": "agent", "profile": "open"}, "call": {"tool": "internal"}}
		with data.airlock.grants as grants
		with data.registry.tools as registry
		with data.airlock.grants.profiles.open.tools as ["internal"]
	closed := {"principal": {"id": "agent", "profile": "closed"}, "call": {"tool": "internal"}}
	network.obligation == none with input as closed
		with data.airlock.grants as grants
		with data.registry.tools as registry
		with data.airlock.grants.profiles.closed.tools as ["internal"]
}

test_missing_allowlist_is_empty if {
	network.obligation == {
		"mode": "egress", "egress_allowlist": [], "egress_allow_cidrs": [],
		"inspect": [], "http_rules": [], "secrets": [],
	} with input as {
		"principal": {"id": "agent", "profile": "open"},
		"call": {"tool": "bare"},
	}
		with data.airlock.grants as grants
		with data.registry.tools as registry
		with data.airlock.grants.profiles.open.tools as ["bare"]
}

test_needed_and_permitted if {
	network.needed with input as {"principal": {"profile": "closed"}, "call": {"tool": "fetch"}}
		with data.airlock.grants as grants
		with data.registry.tools as registry
	not network.permitted with input as {"principal": {"profile": "closed"}, "call": {"tool": "fetch"}}
		with data.airlock.grants as grants
		with data.registry.tools as registry
}

# A dynamic tool on a base with egress gets it only when its definition asks.
test_dynamic_tool_network if {
	cases := [
		{"profile": "open", "network": true, "want": {
			"mode": "egress", "egress_allowlist": ["api.example.com:443"],
			"egress_allow_cidrs": [], "inspect": [], "http_rules": [], "secrets": [],
		}},
		{"profile": "open", "network": false, "want": none},
		{"profile": "open", "network": "true", "want": none},
		{"profile": "closed", "network": true, "want": none},
	]
	every c in cases {
		network.obligation == c.want with input as {
			"principal": {"id": "agent", "profile": c.profile},
			"call": {"tool": "summarize"},
			"tool_definition": {"name": "summarize", "base": "fetch", "network": c.network},
		}
			with data.airlock.grants as grants
			with data.registry.tools as registry
	}
}
