# Call budgets: how many calls a principal may make in the gateway's trailing
# window (input.counters, counted by the gateway over allowed Invoke calls
# before this one, every counter scoped by the authenticated principal).
# Limits are per profile (profiles.<p>.budget in grants; every shipped
# profile has a principal-wide one, principal_calls, which a fresh session id
# per call cannot escape); this package only compares.
package airlock.budget

import data.airlock.tools

# The counters the gateway sends; a budget key outside this set is a typo that
# would otherwise cap nothing (grants data is checked for it in the tests).
counters := {"principal_calls", "principal_tool_calls", "session_calls", "session_tool_calls"}

# An absent or non-numeric counter is 0: the gateway may send no counters at
# all (Decide, or a gateway without a counter store).
used(counter) := value if {
	value := input.counters[counter]
	is_number(value)
} else := 0

# `used` counts the calls before this one, so reaching the limit already means
# this call would exceed it. Only a granted tool is checked, so a budget can
# never tell an ungranted tool from an unknown one.
deny contains {"code": "budget_exceeded", "message": msg, "package": "airlock.budget"} if {
	tools.entry
	some counter, limit in object.get(tools.profile, "budget", {})
	counter in counters
	is_number(limit)
	used(counter) >= limit
	msg := sprintf("budget %s exhausted: %v calls%s, limit %v", [counter, used(counter), window, limit])
}

default window := ""

window := sprintf(" in the last %v s", [input.counters.window_seconds]) if is_number(input.counters.window_seconds)
