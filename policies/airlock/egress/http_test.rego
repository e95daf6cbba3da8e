# egress_http: inspection, HTTP rules and secrets (see egress.rego).
package airlock.egress_test

import data.airlock
import data.airlock.egress
import data.airlock.network

# The worked example of policies/README.md ("Requests inside an allowed host").
github_http := {
	"inspect": true,
	"rules": [{"methods": ["GET", "POST"], "paths": ["/repos/ORG/*"], "max_body_bytes": 1048576}],
	"secrets": [{"name": "github_token", "header": "Authorization", "format": "Bearer {value}"}],
}

http_registry := {
	"github_api": {
		"name": "github_api", "item_type": "function_call", "allowed_network": true,
		"egress_allowlist": [
			"api.github.com:443", "uploads.github.com", "*.githubusercontent.com",
			"gist.github.com", "10.0.0.1",
		],
		"egress_http": {
			# Keys are read like allowlist entries: this is api.github.com:443.
			"API.GitHub.com": github_http,
			"uploads.github.com:443": {
				"rules": [
					{"methods": ["PUT"], "paths": ["/b/**"]},
					{"methods": ["POST"], "paths": ["/a/*"], "max_body_bytes": 5},
				],
				"secrets": [{"name": "upload_key", "header": "X-Key"}],
			},
			"*.githubusercontent.com": {"inspect": true},
			"gist.github.com": {"rules": [{"methods": ["GET"], "paths": ["/**"]}]},
			# Always denied, so never in the effective allowlist: no rule or secret for it.
			"10.0.0.1": {"secrets": [{"name": "github_token", "header": "Authorization"}]},
		},
	},
	"plain": {"name": "plain", "allowed_network": true, "egress_allowlist": ["example.com"]},
	"python": {"name": "python", "allowed_network": false, "egress_allowlist": []},
}

http_grants := {
	"profiles": {
		"dev": {"tools": ["github_api", "plain"], "network": true, "secrets": ["github_token", "upload_key"]},
		"partial": {"tools": ["github_api"], "network": true, "secrets": ["github_token", 7]},
		"none": {"tools": ["github_api"], "network": true},
		"closed": {"tools": ["github_api"], "network": false, "secrets": ["github_token", "upload_key"]},
		"narrow": {
			"tools": ["github_api"], "network": true, "secrets": ["github_token"],
			"egress_allowlist": ["api.github.com"],
		},
		"other": {"tools": ["python"], "network": true},
	},
	"principals": {"trusted": {"secrets": ["upload_key"]}},
}

http_call(principal, profile, tool) := {
	"principal": {"id": principal, "profile": profile},
	"call": {"tool": tool, "item_type": "function_call", "arguments": {}},
}

api_rule := {
	"host": "api.github.com:443", "methods": ["GET", "POST"], "paths": ["/repos/ORG/*"],
	"max_body_bytes": 1048576,
}

api_secret := {
	"name": "github_token", "host": "api.github.com:443", "header": "Authorization",
	"format": "Bearer {value}",
}

upload_secret := {"name": "upload_key", "host": "uploads.github.com:443", "header": "X-Key", "format": "{value}"}

# Sorted; max_body_bytes defaults to 0 (no per-request cap).
upload_rules := [
	{"host": "uploads.github.com:443", "methods": ["POST"], "paths": ["/a/*"], "max_body_bytes": 5},
	{"host": "uploads.github.com:443", "methods": ["PUT"], "paths": ["/b/**"], "max_body_bytes": 0},
]

not_granted(secret, host, profile) := {
	"code": "secret_not_granted", "package": "airlock.egress",
	"message": concat("", [
		`tool "github_api" injects secret "`, secret, `" into requests to `, host,
		`; profile "`, profile, `" (principal "agent") is not granted it`,
	]),
}

test_inspect_hosts if {
	cases := [
		# inspect: true, implied by rules or secrets; the always-denied entry is out.
		{
			"profile": "dev", "tool": "github_api",
			"want": [
				"*.githubusercontent.com:443", "api.github.com:443",
				"gist.github.com:443", "uploads.github.com:443",
			],
		},
		# Hosts the profile's allowlist drops are not inspected either.
		{"profile": "narrow", "tool": "github_api", "want": ["api.github.com:443"]},
		{"profile": "dev", "tool": "plain", "want": []},
	]
	every c in cases {
		egress.inspect_hosts == c.want with input as http_call("agent", c.profile, c.tool)
			with airlock.grants as http_grants
			with data.registry.tools as http_registry
	}
}

test_http_rules if {
	gist := {"host": "gist.github.com:443", "methods": ["GET"], "paths": ["/**"], "max_body_bytes": 0}
	egress.http_rules == array.concat([api_rule, gist], upload_rules) with input as http_call("agent", "dev", "github_api")
		with airlock.grants as http_grants
		with data.registry.tools as http_registry
	egress.http_rules == [api_rule] with input as http_call("agent", "narrow", "github_api")
		with airlock.grants as http_grants
		with data.registry.tools as http_registry
}

# Only granted secrets are passed on, from the profile plus the principal's
# extras; non-string grants are ignored.
test_secrets_are_the_granted_ones if {
	cases := [
		{"principal": "agent", "profile": "dev", "want": [api_secret, upload_secret]},
		{"principal": "agent", "profile": "partial", "want": [api_secret]},
		{"principal": "trusted", "profile": "partial", "want": [api_secret, upload_secret]},
		{"principal": "agent", "profile": "none", "want": []},
		{"principal": "trusted", "profile": "none", "want": [upload_secret]},
	]
	every c in cases {
		egress.secrets == c.want with input as http_call(c.principal, c.profile, "github_api")
			with airlock.grants as http_grants
			with data.registry.tools as http_registry
	}
}

test_secret_not_granted if {
	cases := [
		{"principal": "agent", "profile": "dev", "want": set()},
		{"principal": "trusted", "profile": "partial", "want": set()},
		# A secret only for a host the profile's allowlist drops is never needed.
		{"principal": "agent", "profile": "narrow", "want": set()},
		{
			"principal": "agent", "profile": "partial",
			"want": {not_granted("upload_key", "uploads.github.com:443", "partial")},
		},
		{"principal": "agent", "profile": "none", "want": {
			not_granted("github_token", "api.github.com:443", "none"),
			not_granted("upload_key", "uploads.github.com:443", "none"),
		}},
		# An ungranted tool has no entry: nothing about its secrets shows.
		{"principal": "agent", "profile": "other", "want": set()},
	]
	every c in cases {
		egress.deny == c.want with input as http_call(c.principal, c.profile, "github_api")
			with airlock.grants as http_grants
			with data.registry.tools as http_registry
	}
}

test_network_obligation_carries_them_only_with_egress if {
	ob := network.obligation with input as http_call("agent", "narrow", "github_api")
		with airlock.grants as http_grants
		with data.registry.tools as http_registry
	ob == {
		"mode": "egress", "egress_allowlist": ["api.github.com:443"], "egress_allow_cidrs": [],
		"inspect": ["api.github.com:443"], "http_rules": [api_rule], "secrets": [api_secret],
	}
	closed := network.obligation with input as http_call("agent", "closed", "github_api")
		with airlock.grants as http_grants
		with data.registry.tools as http_registry
	[closed.mode, closed.inspect, closed.http_rules, closed.secrets] == ["none", [], [], []]
}

# The whole decision for the README's example.
test_decision_for_the_github_example if {
	d := airlock.decision with input as http_call("agent", "narrow", "github_api")
		with airlock.grants as http_grants
		with data.registry.tools as http_registry
	d.allow == true
	d.obligations.network.inspect == ["api.github.com:443"]
	d.obligations.network.http_rules == [api_rule]
	d.obligations.network.secrets == [api_secret]
}

test_decision_denies_an_ungranted_secret if {
	d := airlock.decision with input as http_call("agent", "partial", "github_api")
		with airlock.grants as http_grants
		with data.registry.tools as http_registry
	d.allow == false
	[r.code | some r in d.reasons] == ["secret_not_granted"]
}

# Report-only rollout of the rule runs the call, but never hands over the
# secret it would have denied.
test_shadowed_secret_not_granted_injects_nothing_ungranted if {
	d := airlock.decision with input as http_call("agent", "partial", "github_api")
		with airlock.grants as http_grants
		with data.registry.tools as http_registry
		with airlock.config.shadow as {"codes": ["secret_not_granted"]}
	d.allow == true
	[r.code | some r in d.shadow] == ["secret_not_granted"]
	d.obligations.network.secrets == [api_secret]
}
