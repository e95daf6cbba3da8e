# Network obligation: the sandbox gets egress only when both the tool needs it
# and the principal's profile allows it; where to is airlock.egress's job.
package airlock.network

import data.airlock.egress
import data.airlock.tools

# Only an explicit `true` grants network; a missing or non-boolean flag does not.
permitted if tools.profile.network == true

# Whether a registry entry's tool may have egress at all; airlock.tool_definitions
# asks the same of a dynamic tool's base.
needs_network(entry) if entry.allowed_network == true

needed if {
	not tools.dynamic
	needs_network(tools.entry)
}

# A dynamic tool gets its base's egress only if its definition asks for
# network: code that was admitted without network never runs with it.
needed if {
	tools.dynamic
	needs_network(tools.entry)
	tools.definition.network == true
}

default obligation := {
	"mode": "none", "egress_allowlist": [], "egress_allow_cidrs": [],
	"inspect": [], "http_rules": [], "secrets": [],
}

# inspect, http_rules and secrets (airlock.egress) only ever narrow or
# authenticate requests to the allowlist's hosts; without egress there are none.
obligation := {
	"mode": "egress",
	"egress_allowlist": egress.effective_allowlist,
	"egress_allow_cidrs": allow_cidrs,
	"inspect": egress.inspect_hosts,
	"http_rules": egress.http_rules,
	"secrets": egress.secrets,
} if {
	needed
	permitted
}

# Always-denied networks the registry explicitly opens for this tool (test
# servers, an internal API). Passed through as written, valid CIDRs only, so
# the loosening shows in the decision and its audit event.
allow_cidrs := sort([cidr |
	some cidr in object.get(tools.entry, "egress_allow_cidrs", [])
	is_string(cidr)
	net.cidr_is_valid(cidr)
])
