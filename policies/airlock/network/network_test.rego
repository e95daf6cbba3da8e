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
	"python": {"allowed_network": false, "egress_allowlist": ["ignored.example.com"]},
	"bare": {"allowed_network": true},
}

none := {"mode": "none", "egress_allowlist": []}

test_network_obligation if {
	cases := [
		# Normalized by airlock.egress: no port means 443.
		{"profile": "open", "tool": "fetch", "want": {"mode": "egress", "egress_allowlist": ["api.example.com:443"]}},
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

test_missing_allowlist_is_empty if {
	network.obligation == {"mode": "egress", "egress_allowlist": []} with input as {
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
