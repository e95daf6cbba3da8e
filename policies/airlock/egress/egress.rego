# Egress destinations: which host:port pairs a granted tool may reach. Builds
# the effective allowlist handed to the sandbox as an obligation (through
# airlock.network) and checks URL arguments against it before anything runs.
# The network package decides *whether* there is egress; this one decides
# *where to*.
#
# Allowlist entries are `host[:port]`:
# - host is a DNS name or a glob over one (matched with glob.match and "." as
#   the delimiter: `*` is one label, `**` any number of labels), a plain
#   dotted-quad IPv4 address, or a bracketed IPv6 address (`[2001:db8::1]`);
# - no port means 443 only; there is no port wildcard.
# An entry that does not parse, whose last label is a wildcard or not a name
# (`*`, `10.0.0.*`), or that names an always-denied address or localhost is
# dropped. IP addresses only ever match an entry that lists them literally.
#
# The policy sees host names, not the addresses they resolve to: the egress
# filter that enforces the obligation must apply always_denied to the resolved
# addresses too (DNS rebinding, names pointing at 127.0.0.1).
#
# Inside an allowed host, the registry's egress_http (keyed by allowlist entry)
# asks the egress proxy to open its TLS (inspect), to let through only the
# requests its rules match, and to add secrets to them. This package turns it
# into inspect_hosts, http_rules and secrets for the effective allowlist only,
# passes on only the secrets the principal is granted (grants `secrets`), and
# denies a call whose tool needs one it is not (secret_not_granted).
package airlock.egress

import data.airlock.tools

# Denied whatever any allowlist says. ::ffff:0:0/96 is deliberately absent: OPA
# treats IPv4-mapped IPv6 as IPv4, so that range would contain every IPv4
# address; mapped addresses are caught by the IPv4 ranges instead.
always_denied := {
	"0.0.0.0/8": "this network",
	"10.0.0.0/8": "private",
	"100.64.0.0/10": "carrier-grade NAT",
	"127.0.0.0/8": "loopback",
	"169.254.0.0/16": "link-local",
	"169.254.169.254/32": "cloud metadata",
	"172.16.0.0/12": "private",
	"192.168.0.0/16": "private",
	"::/128": "unspecified",
	"::1/128": "loopback",
	"fc00::/7": "unique local",
	"fd00:ec2::254/128": "cloud metadata",
	"fe80::/10": "link-local",
}

default_ports := {"http": 80, "https": 443}

# --- Effective allowlist -----------------------------------------------------

# METADATA
# title: Effective egress allowlist
# description: >-
#   Sorted, normalized `host:port` strings: the tool's registry allowlist minus
#   malformed and always-denied entries and, when the principal's profile has
#   its own egress_allowlist, minus entries no profile entry covers.
effective_allowlist := sort({e.text | some e in effective_entries})

effective_entries contains entry if {
	some raw in object.get(tools.entry, "egress_allowlist", [])
	entry := parse_entry(raw)
	not denied_entry(entry)
	profile_allows(entry)
}

denied_entry(entry) if count(denied_ranges(entry)) > 0

denied_entry(entry) if localhost(entry.host)

# A profile without egress_allowlist does not narrow its tools; one with an
# empty list removes every destination.
profile_allows(_) if not profile_narrows

profile_allows(entry) if {
	some raw in tools.profile.egress_allowlist
	covers(parse_entry(raw), entry)
}

profile_narrows if "egress_allowlist" in object.keys(tools.profile)

# Does profile entry p allow everything tool entry t allows? Exact equality,
# or p's glob matching t's host text: a `*` in t is then absorbed by a `*` in p
# (p's literal characters cannot match `*`). A `**` in t can span labels that
# a `*` in p cannot, so such an entry needs an identical profile entry.
covers(p, t) if {
	p.port == t.port
	p.host == t.host
}

covers(p, t) if {
	p.port == t.port
	p.kind == "name"
	t.kind == "name"
	not contains(t.host, "**")
	glob.match(p.host, ["."], t.host)
}

entry_pattern := `^(\[[0-9a-f:.]+\]|[a-z0-9_*.-]+)(:[0-9]{1,5})?$`

# {"host", "port", "kind", "text"} for a well-formed entry; undefined otherwise.
parse_entry(raw) := entry if {
	is_string(raw)
	[[_, raw_host, raw_port]] := regex.find_all_string_submatch_n(entry_pattern, lower(raw), 1)
	host := host_key(raw_host)
	kind := entry_kind(host)
	port := parse_port(raw_port, 443)
	entry := {"host": host, "port": port, "kind": kind, "text": sprintf("%s:%d", [display(host, kind), port])}
}

entry_kind(host) := kind if {
	kind := host_kind(host)
	kind in {"ipv4", "ipv6"}
}

# Names and globs: the last label must be a literal name, so `*`, `**` or
# `10.0.0.*` cannot stand in for "any host" or for an IP range.
entry_kind(host) := "name" if {
	host_kind(host) == "name"
	labels := split(host, ".")
	regex.match(`^[a-z0-9-]*[a-z][a-z0-9-]*$`, labels[count(labels) - 1])
}

# --- HTTP inside allowed hosts ------------------------------------------------

# [entry, config]: an effective entry and the registry's egress_http value for
# it, found by parsing the key the same way as the allowlist (the registry
# makes every key one of the tool's own entries).
http_configs contains [entry, config] if {
	some entry in effective_entries
	some key, config in object.get(tools.entry, "egress_http", {})
	parse_entry(key).text == entry.text
}

# Rules and secrets cannot be enforced without opening the TLS, so they imply it.
inspects(config) if config.inspect == true

inspects(config) if count(object.get(config, "rules", [])) > 0

inspects(config) if count(object.get(config, "secrets", [])) > 0

# METADATA
# title: Hosts whose TLS the egress proxy inspects
# description: Sorted `host:port` texts of the effective allowlist.
inspect_hosts := sort({entry.text |
	some [entry, config] in http_configs
	inspects(config)
})

# METADATA
# title: Per-request HTTP rules
# description: >-
#   {host, methods, paths, max_body_bytes} (0 = no per-request cap), sorted by
#   host, methods, paths, max_body_bytes. An inspected host with rules allows
#   only requests one of its rules matches; one without any allows every
#   method and path.
http_rules := [{"host": host, "methods": methods, "paths": paths, "max_body_bytes": size} |
	some [host, methods, paths, size] in sort(rule_rows)
]

rule_rows contains [entry.text, raw.methods, raw.paths, object.get(raw, "max_body_bytes", 0)] if {
	some [entry, config] in http_configs
	some raw in object.get(config, "rules", [])
}

# METADATA
# title: Secrets the egress proxy injects
# description: >-
#   {name, host, header, format}, sorted by host, name, header; only granted
#   secrets, so a shadowed secret_not_granted never hands one over.
secrets := [{"name": name, "host": host, "header": header, "format": format} |
	some [host, name, header, format] in sort(secret_rows)
]

secret_rows contains [entry.text, raw.name, raw.header, object.get(raw, "format", "{value}")] if {
	some [entry, config] in http_configs
	some raw in object.get(config, "secrets", [])
	raw.name in granted_secrets
}

# Like tools, secrets are additive: a principal entry can only add to its
# profile's. Absent means none.
granted_secrets contains name if {
	some name in tools.profile.secrets
	is_string(name)
}

granted_secrets contains name if {
	some name in data.airlock.grants.principals[tools.principal_id].secrets
	is_string(name)
}

# Names the secret and the profile, never a value (the policy has none).
deny contains secret_reason(msg) if {
	some [entry, config] in http_configs
	some raw in object.get(config, "secrets", [])
	not raw.name in granted_secrets
	msg := sprintf(
		"tool %q injects secret %q into requests to %s; profile %q (principal %q) is not granted it",
		[tools.name, raw.name, entry.text, tools.profile_name, tools.principal_id],
	)
}

# --- URL arguments -----------------------------------------------------------

deny contains reason(sprintf("argument %q of tool %q %s", [name, tools.name, problem])) if {
	tools.entry
	some name in data.airlock.egress.url_arguments[tools.registry_name]
	value := object.get(tools.arguments, name, null)
	value != null
	problem := url_problem(value)
}

# One message per URL, most specific first; undefined when the URL is allowed.
url_problem(value) := "must be a URL string" if {
	not is_string(value)
} else := sprintf("uses scheme %q; only http and https are allowed", [scheme]) if {
	[[_, scheme]] := regex.find_all_string_submatch_n(`^([a-zA-Z][a-zA-Z0-9+.-]*):`, value, 1)
	not lower(scheme) in object.keys(default_ports)
} else := "is not an absolute http:// or https:// URL with a plain host" if {
	not parse_url(value)
} else := sprintf(
	"has host %q, a numeric form other than a plain dotted quad (decimal, octal or hex IP), which is always denied",
	[dest.host],
) if {
	dest := parse_url(value)
	dest.kind == "numeric"
} else := sprintf("points at %s, which is always denied (%s)", [dest.host, concat(", ", ranges)]) if {
	dest := parse_url(value)
	ranges := denied_ranges(dest)
	count(ranges) > 0
} else := sprintf("points at %s, which is always denied (localhost)", [dest.host]) if {
	dest := parse_url(value)
	localhost(dest.host)
} else := sprintf("points at IP address %s, which the egress allowlist does not list literally", [dest.text]) if {
	dest := parse_url(value)
	dest.kind in {"ipv4", "ipv6"}
	not allowed(dest)
} else := sprintf("points at %s, which is not in the egress allowlist", [dest.text]) if {
	dest := parse_url(value)
	not allowed(dest)
}

allowed(dest) if {
	some entry in effective_entries
	covers(entry, dest)
}

# The authority may only be a plain host (letters, digits, _ . -) or a
# bracketed IPv6 address, with an optional port: user info (`a@b`),
# percent-encoding, backslashes and whitespace are refused outright, since
# URL parsers disagree about them and that disagreement is how allowlists
# get bypassed.
url_pattern := `^([a-zA-Z][a-zA-Z0-9+.-]*)://(\[[0-9a-fA-F:.]+\]|[a-zA-Z0-9_.-]+)(:[0-9]{1,5})?([/?#].*)?$`

# {"scheme", "host", "port", "kind", "text"}; undefined when the URL does not
# parse, its host or port is malformed, or its scheme is not http or https.
parse_url(raw) := dest if {
	[[_, raw_scheme, raw_host, raw_port, _]] := regex.find_all_string_submatch_n(url_pattern, raw, 1)
	scheme := lower(raw_scheme)
	host := host_key(lower(raw_host))
	kind := host_kind(host)
	port := parse_port(raw_port, default_ports[scheme])
	dest := {
		"scheme": scheme, "host": host, "port": port, "kind": kind,
		"text": sprintf("%s:%d", [display(host, kind), port]),
	}
}

# --- Hosts and ports ---------------------------------------------------------

# Brackets off, one trailing dot off; every label must be non-empty.
host_key(raw) := host if {
	startswith(raw, "[")
	host := trim_suffix(trim_prefix(raw, "["), "]")
}

host_key(raw) := host if {
	not startswith(raw, "[")
	host := trim_suffix(raw, ".")
	every label in split(host, ".") {
		label != ""
	}
}

plain_ipv4 := `^((25[0-5]|2[0-4][0-9]|1[0-9][0-9]|[1-9]?[0-9])\.){3}(25[0-5]|2[0-4][0-9]|1[0-9][0-9]|[1-9]?[0-9])$`

# Kinds: "ipv6" (has a colon, which only a bracketed host can, and parses),
# "ipv4" (plain dotted quad),
# "numeric" (every label decimal or 0x-hex but not a plain dotted quad:
# 2130706433, 0x7f000001, 0177.0.0.1, 127.1 all reach 127.0.0.1 through
# inet_aton, so they are always denied) or "name".
host_kind(host) := "ipv6" if {
	contains(host, ":")
	valid_ipv6(host)
}

host_kind(host) := "ipv4" if regex.match(plain_ipv4, host)

host_kind(host) := "numeric" if {
	not contains(host, ":")
	not regex.match(plain_ipv4, host)
	every label in split(host, ".") {
		regex.match(`^([0-9]+|0x[0-9a-f]*)$`, label)
	}
}

host_kind(host) := "name" if {
	not contains(host, ":")
	some label in split(host, ".")
	not regex.match(`^([0-9]+|0x[0-9a-f]*)$`, label)
}

# net.cidr_contains errors (undefined) on anything that is not an address.
# IPv4-mapped IPv6 (::ffff:127.0.0.1) counts as IPv4 to OPA.
valid_ipv6(host) if net.cidr_contains("::/0", host)

valid_ipv6(host) if net.cidr_contains("0.0.0.0/0", host)

# Names of the always-denied ranges an address is in; [] for a name.
denied_ranges(dest) := sort({label |
	dest.kind in {"ipv4", "ipv6"}
	some cidr, label in always_denied
	net.cidr_contains(cidr, dest.host)
})

localhost("localhost")

localhost(host) if endswith(host, ".localhost")

# Leading zeros are dropped (Python and curl read :0443 as 443); 0 and values
# above 65535 are refused.
parse_port("", default_port) := default_port

parse_port(raw, _) := port if {
	raw != ""
	digits := trim_left(trim_prefix(raw, ":"), "0")
	digits != ""
	port := to_number(digits)
	port <= 65535
}

display(host, "ipv6") := sprintf("[%s]", [host])

display(host, kind) := host if kind != "ipv6"

reason(message) := {"code": "egress_destination_denied", "message": message, "package": "airlock.egress"}

secret_reason(message) := {"code": "secret_not_granted", "message": message, "package": "airlock.egress"}
