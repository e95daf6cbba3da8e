# Airlock entry point: decides whether one LLM tool call may run, and under
# which obligations. Query data.airlock.decision per call and
# data.airlock.granted_tools to list the tools a principal may see.
package airlock

import data.airlock.limits
import data.airlock.network
import data.airlock.tools

default allow := false

# Allow is just "no deny reasons", so a check that silently went undefined
# would fail open. The core checks therefore use `not`: they fire whenever the
# grant or profile they need is missing, and a missing item_type mismatches.
allow if count(deny) == 0

# METADATA
# title: Decision for one tool call
# description: >-
#   Whether the call may run, why, and the obligations the sandbox must enforce.
#   Always defined: the gateway must never have to guess what "no answer" means.
# entrypoint: true
decision := {
	"allow": allow,
	"reasons": reasons,
	"obligations": {
		"limits": limits.effective,
		"network": network.obligation,
	},
}

# METADATA
# title: Tools granted to the principal
# description: Sorted names of the registered tools the calling principal may use.
# entrypoint: true
granted_tools := sort(tools.available)

reasons := [{"code": "allowed", "message": msg}] if {
	allow
	msg := sprintf("tool %q is granted to principal %q", [tools.name, tools.principal_id])
}

reasons := sort(deny) if not allow

# One message whether the tool is unregistered or merely ungranted, so callers
# cannot probe the registry for tools they are not allowed to see.
deny contains {"code": "tool_not_granted", "message": msg} if {
	not tools.entry
	msg := sprintf("tool %q is not available to principal %q", [tools.name, tools.principal_id])
}

deny contains {"code": "unknown_profile", "message": msg} if {
	not tools.profile
	msg := sprintf("principal %q has unknown profile %q", [tools.principal_id, tools.profile_name])
}

# The remaining checks need the registry entry, so they only run for a granted
# tool; an ungranted one must look exactly like an unknown one.
deny contains {"code": "item_type_mismatch", "message": msg} if {
	got := object.get(input, ["call", "item_type"], "")
	got != tools.entry.item_type
	msg := sprintf("tool %q expects item type %q, got %q", [tools.name, tools.entry.item_type, got])
}

deny contains {"code": "arguments_invalid", "message": msg} if {
	tools.entry
	errors := object.get(input, ["call", "arguments_errors"], [])
	count(errors) > 0
	msg := sprintf("arguments for tool %q are invalid: %v", [tools.name, errors[0]])
}

# Denied rather than run without network: the tool would only fail later, in a
# way that is harder for the caller to understand.
deny contains {"code": "network_not_permitted", "message": msg} if {
	network.needed
	not network.permitted
	msg := sprintf("tool %q needs network, which profile %q does not permit", [tools.name, tools.profile_name])
}
