# Network obligation: the sandbox gets egress only when both the tool needs it
# and the principal's profile allows it; where to is airlock.egress's job.
package airlock.network

import data.airlock.egress
import data.airlock.tools

# Only an explicit `true` grants network; a missing or non-boolean flag does not.
permitted if tools.profile.network == true

needed if tools.entry.allowed_network == true

default obligation := {"mode": "none", "egress_allowlist": []}

obligation := {"mode": "egress", "egress_allowlist": egress.effective_allowlist} if {
	needed
	permitted
}
