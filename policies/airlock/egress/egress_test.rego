package airlock.egress_test

import data.airlock.egress

grants := {
	"profiles": {
		"net": {"tools": ["web_fetch", "python"], "network": true},
		"other": {"tools": ["python"], "network": true},
	},
	"principals": {},
}

allowlist := ["*.wikipedia.org:443", "93.184.216.34", "[2001:db8::1]:8443", "plain.example:80"]

registry := {
	"web_fetch": {"name": "web_fetch", "allowed_network": true, "egress_allowlist": allowlist},
	"python": {"name": "python", "allowed_network": false, "egress_allowlist": []},
}

call(profile, tool, args) := {
	"principal": {"id": "agent", "profile": profile},
	"call": {"tool": tool, "arguments": args},
}

net_profile := {"tools": ["web_fetch"], "network": true}

# The registry and profile with the given allowlists, for `with`.
tools_with(tool_list) := object.union(registry, {"web_fetch": {"egress_allowlist": tool_list}})

grants_with(profile) := object.union(grants, {"profiles": {"net": profile}})

fetch := call("net", "web_fetch", {})

test_effective_allowlist_normalizes_entries if {
	cases := [
		{"in": ["*.wikipedia.org:443"], "want": ["*.wikipedia.org:443"]},
		# No port means 443; case, a trailing dot and leading zeros are normalized
		# and duplicates collapse.
		{"in": ["API.Example.COM.", "api.example.com:443"], "want": ["api.example.com:443"]},
		{"in": ["example.com:8080", "example.com:08080", "b.example:1"], "want": ["b.example:1", "example.com:8080"]},
		{"in": ["**.example.org", "en*.wikipedia.org:8443"], "want": ["**.example.org:443", "en*.wikipedia.org:8443"]},
		{"in": ["93.184.216.34", "[2001:DB8::1]:8443"], "want": ["93.184.216.34:443", "[2001:db8::1]:8443"]},
		# Just outside the always-denied ranges is an ordinary address.
		{"in": ["172.32.0.1", "100.128.0.1", "11.0.0.1"], "want": ["100.128.0.1:443", "11.0.0.1:443", "172.32.0.1:443"]},
		{"in": [], "want": []},
	]
	every c in cases {
		egress.effective_allowlist == c.want with input as fetch
			with data.airlock.grants as grants
			with data.registry.tools as tools_with(c.in)
	}
}

test_effective_allowlist_drops_malformed_entries if {
	malformed := [
		"", 7, null, "a..b", ".example.com", "host:0", "host:65536", "host:", "host:*",
		"http://example.com", "https://example.com/", "a b.example", "user@example.com",
		# No literal name at the end: these would stand for any host or an IP range.
		"*", "**", "*.*", "10.0.0.*", "example.*",
		# IP forms other than a plain dotted quad or a bracketed IPv6 address.
		"0x7f000001", "2130706433", "127.1", "0177.0.0.1", "[::1", "[zz::1]", "::1", "[fe80::1%eth0]",
	]
	every entry in malformed {
		egress.effective_allowlist == ["ok.example:443"] with input as fetch
			with data.airlock.grants as grants
			with data.registry.tools as tools_with([entry, "ok.example"])
	}
}

test_effective_allowlist_drops_always_denied_addresses if {
	denied := [
		"0.0.0.0", "10.1.2.3", "100.64.0.1", "127.0.0.1:80", "169.254.169.254", "169.254.1.1",
		"172.16.0.1", "172.31.255.255", "192.168.1.1",
		"[::]", "[::1]", "[fc00::1]", "[fd00:ec2::254]", "[fe80::1]", "[::ffff:127.0.0.1]", "[::ffff:10.0.0.1]",
		"localhost", "localhost:8080", "api.localhost",
	]
	every entry in denied {
		egress.effective_allowlist == ["8.8.8.8:443"] with input as fetch
			with data.airlock.grants as grants
			with data.registry.tools as tools_with([entry, "8.8.8.8"])
	}
}

test_profile_allowlist_narrows_tool_entries if {
	tool_list := [
		"*.wikipedia.org:443", "en.wikipedia.org", "api.example.com", "**.example.org",
		"**.example.net", "93.184.216.34", "*.example.io", "docs.example.dev",
	]
	profile_list := [
		"**.wikipedia.org:443", # covers *.wikipedia.org and en.wikipedia.org
		"api.example.com:8443", # other port: api.example.com:443 is dropped
		"**.example.org", # identical entry: kept
		"*.example.net", # narrower than **.example.net: dropped
		"93.184.216.34", # identical literal: kept
		"www.example.io", # narrower than *.example.io: dropped
		"*.example.dev", # covers docs.example.dev
		"not an entry", # malformed profile entries allow nothing
	]
	cases := [
		{
			"profile": object.union(net_profile, {"egress_allowlist": profile_list}),
			"want": [
				"**.example.org:443", "*.wikipedia.org:443", "93.184.216.34:443",
				"docs.example.dev:443", "en.wikipedia.org:443",
			],
		},
		# An empty profile list removes everything; no list leaves the tool's own.
		{"profile": object.union(net_profile, {"egress_allowlist": []}), "want": []},
		{
			"profile": net_profile,
			"want": [
				"**.example.net:443", "**.example.org:443", "*.example.io:443", "*.wikipedia.org:443",
				"93.184.216.34:443", "api.example.com:443", "docs.example.dev:443", "en.wikipedia.org:443",
			],
		},
	]
	every c in cases {
		egress.effective_allowlist == c.want with input as fetch
			with data.airlock.grants as grants_with(c.profile)
			with data.registry.tools as tools_with(tool_list)
	}
}

test_effective_allowlist_empty_for_ungranted_or_unknown_tools if {
	every doc in [call("other", "web_fetch", {}), call("net", "nope", {}), {}] {
		egress.effective_allowlist == [] with input as doc
			with data.airlock.grants as grants
			with data.registry.tools as registry
	}
}

url_denials := sort([r.message | some r in egress.deny])

fetching(url) := call("net", "web_fetch", {"url": url})

test_allowed_urls if {
	urls := [
		"https://en.wikipedia.org/wiki/Rego",
		"HTTPS://EN.Wikipedia.ORG./",
		"https://en.wikipedia.org:443/",
		"https://en.wikipedia.org:0443",
		"https://de.wikipedia.org?q=1",
		"https://de.wikipedia.org#top",
		"https://93.184.216.34/",
		"https://[2001:db8::1]:8443/x",
		"http://plain.example/",
		"http://plain.example:80/path with spaces",
	]
	every url in urls {
		url_denials == [] with input as fetching(url)
			with data.airlock.grants as grants
			with data.registry.tools as registry
	}
}

# Denied URLs, by category: each case is [url, the message after the prefix].
url_prefix := `argument "url" of tool "web_fetch" `

test_urls_outside_the_allowlist if {
	cases := [
		# Wrong port, wrong depth, wrong domain.
		["http://en.wikipedia.org/", "en.wikipedia.org:80"],
		["https://wikipedia.org/", "wikipedia.org:443"],
		["https://a.b.wikipedia.org/", "a.b.wikipedia.org:443"],
		["https://evil.example/", "evil.example:443"],
		["https://en.wikipedia.org.evil.example/", "en.wikipedia.org.evil.example:443"],
		["https://plain.example/", "plain.example:443"],
	]
	every c in cases {
		want := sprintf("%spoints at %s, which is not in the egress allowlist", [url_prefix, c[1]])
		url_denials == [want] with input as fetching(c[0])
			with data.airlock.grants as grants
			with data.registry.tools as registry
	}
}

test_urls_to_always_denied_addresses if {
	cases := [
		["https://127.0.0.1/", "127.0.0.1", "loopback"],
		["http://169.254.169.254/latest/meta-data/", "169.254.169.254", "cloud metadata, link-local"],
		["https://10.0.0.5:443/", "10.0.0.5", "private"],
		["https://100.100.100.200/", "100.100.100.200", "carrier-grade NAT"],
		["https://0.0.0.0/", "0.0.0.0", "this network"],
		["https://[::1]/", "::1", "loopback"],
		["https://[::ffff:127.0.0.1]/", "::ffff:127.0.0.1", "loopback"],
		["https://[fd00:ec2::254]/", "fd00:ec2::254", "cloud metadata, unique local"],
		["https://[FE80::1]/", "fe80::1", "link-local"],
		["https://localhost/", "localhost", "localhost"],
		["https://db.localhost:443/", "db.localhost", "localhost"],
	]
	every c in cases {
		want := sprintf("%spoints at %s, which is always denied (%s)", [url_prefix, c[1], c[2]])
		url_denials == [want] with input as fetching(c[0])
			with data.airlock.grants as grants
			with data.registry.tools as registry
	}
}

# Numeric forms that inet_aton reads as 127.0.0.1.
test_urls_with_numeric_hosts if {
	cases := [
		["https://2130706433/", "2130706433"],
		["https://0x7F000001/", "0x7f000001"],
		["https://0177.0.0.1/", "0177.0.0.1"],
		["https://127.1/", "127.1"],
	]
	every c in cases {
		url_denials == [sprintf(
			"%shas host %q, a numeric form other than a plain dotted quad (decimal, octal or hex IP), which is always denied",
			[url_prefix, c[1]],
		)] with input as fetching(c[0])
			with data.airlock.grants as grants
			with data.registry.tools as registry
	}
}

test_urls_with_unlisted_ip_literals if {
	cases := [
		["https://8.8.8.8/", "8.8.8.8:443"],
		["https://93.184.216.34:8443/", "93.184.216.34:8443"],
		["https://[2001:db8::2]:8443/", "[2001:db8::2]:8443"],
	]
	every c in cases {
		url_denials == [sprintf(
			"%spoints at IP address %s, which the egress allowlist does not list literally",
			[url_prefix, c[1]],
		)] with input as fetching(c[0])
			with data.airlock.grants as grants
			with data.registry.tools as registry
	}
}

test_urls_with_other_schemes if {
	cases := [
		["ftp://en.wikipedia.org/", "ftp"],
		["file:///etc/passwd", "file"],
		["gopher://en.wikipedia.org:443/", "gopher"],
	]
	every c in cases {
		want := sprintf("%suses scheme %q; only http and https are allowed", [url_prefix, c[1]])
		url_denials == [want] with input as fetching(c[0])
			with data.airlock.grants as grants
			with data.registry.tools as registry
	}
}

test_non_string_url if {
	url_denials == [concat("", [url_prefix, "must be a URL string"])] with input as fetching(42)
		with data.airlock.grants as grants
		with data.registry.tools as registry
}

# Anything URL parsers might disagree on is refused before any matching.
test_urls_that_do_not_parse if {
	urls := [
		"en.wikipedia.org/wiki",
		" https://en.wikipedia.org/",
		"https://en.wikipedia.org@evil.example/",
		"https://evil.example\\@en.wikipedia.org/",
		"https://%65n.wikipedia.org/",
		"https://en..wikipedia.org/",
		"https:///wiki",
		"https://en.wikipedia.org:0/",
		"https://en.wikipedia.org:65536/",
		"https://en.wikipedia.org:/",
		"https://en.wikipedia.org/\nHost: evil.example",
		"https://[fe80::1%25eth0]/",
		"https://[not:an:ip]/",
	]
	unparsed := concat("", [url_prefix, "is not an absolute http:// or https:// URL with a plain host"])
	every url in urls {
		url_denials == [unparsed] with input as fetching(url)
			with data.airlock.grants as grants
			with data.registry.tools as registry
	}
}

test_url_rules_only_for_granted_tools_with_url_arguments if {
	docs := [
		call("other", "web_fetch", {"url": "https://127.0.0.1/"}), # ungranted
		call("net", "python", {"url": "https://127.0.0.1/"}), # no URL arguments
		call("net", "web_fetch", {}), # argument absent: left to the schema check
		call("net", "web_fetch", "https://127.0.0.1/"), # free-text arguments
	]
	every doc in docs {
		count(egress.deny) == 0 with input as doc
			with data.airlock.grants as grants
			with data.registry.tools as registry
	}
}

test_url_arguments_come_from_data if {
	reasons := egress.deny with input as call("net", "python", {"code": "x", "endpoint": "https://evil.example/"})
		with data.airlock.grants as grants
		with data.registry.tools as registry
		with egress.url_arguments as {"python": ["endpoint", "missing"]}
	reasons == {{
		"code": "egress_destination_denied",
		"message": `argument "endpoint" of tool "python" points at evil.example:443, which is not in the egress allowlist`,
		"package": "airlock.egress",
	}}
}

test_no_url_arguments_data if {
	count(egress.deny) == 0 with input as call("net", "web_fetch", {"url": "https://127.0.0.1/"})
		with data.airlock.grants as grants
		with data.registry.tools as registry
		with egress.url_arguments as {}
}

test_shipped_url_arguments if {
	egress.url_arguments == {"web_fetch": ["url"]}
}
