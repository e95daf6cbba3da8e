# Airlock entry point: decides whether one LLM tool call may run, and under
# which obligations. Query data.airlock.decision per call and
# data.airlock.granted_tools to list the tools a principal may see.
#
# This package owns the core checks (grant, profile, item type, schema errors,
# network) and combines them with the deny reasons of airlock.arguments,
# airlock.egress, airlock.budget, airlock.sandbox, airlock.limits,
# airlock.computer, airlock.images (the image gate) and, for a call of a
# dynamic tool (input.tool_definition), airlock.tool_definitions' admission
# checks. Each reason names the package
# that made it, so it can be rolled out in shadow mode
# (data.airlock.config.shadow).
package airlock

import data.airlock.approvals
import data.airlock.arguments
import data.airlock.budget
import data.airlock.computer
import data.airlock.egress
import data.airlock.images
import data.airlock.limits
import data.airlock.network
import data.airlock.sandbox
import data.airlock.tool_definitions
import data.airlock.tools

default allow := false

# Allow is just "no enforced deny reasons", so a check that silently went
# undefined would fail open. The core checks therefore use `not`: they fire
# whenever the grant or profile they need is missing, and a missing item_type
# mismatches.
allow if {
	runnable
	count(enforced_asks) == 0
}

# Ask: nothing denies the call, but an approval rule (airlock.approvals)
# wants a human to say yes first. Deny beats ask, and ask beats allow. The
# obligations and the tool entry are those the call runs with once approved.
default ask := false

ask if {
	runnable
	count(enforced_asks) > 0
}

# No enforced deny: the call runs now (allow) or once approved (ask).
runnable if count(enforced) == 0

# METADATA
# title: Decision for one tool call
# description: >-
#   Whether the call may run, why, what would have been denied in shadow mode,
#   the obligations the sandbox must enforce, and the registry entry to run.
#   Always defined: the gateway must never have to guess what "no answer" means.
# entrypoint: true
decision := {
	"allow": allow,
	"ask": ask,
	"reasons": reasons,
	"shadow": sort(shadowed),
	"shadow_asks": sort(shadowed_asks),
	"obligations": {
		"limits": limits.effective,
		"network": network.obligation,
		"sandbox": sandbox_obligation,
		"artifacts": limits.artifacts,
		"computer": computer_obligation,
	},
	"tool": tool,
}

# METADATA
# title: Tools granted to the principal
# description: >-
#   Sorted names of the registered tools the calling principal may use, and of
#   the granted built-ins (define_tool). Dynamic tools are the gateway's to list.
# entrypoint: true
granted_tools := sort(tools.listed)

reasons := [{"code": "allowed", "message": msg}] if {
	allow
	msg := sprintf("tool %q is granted to principal %q", [tools.name, tools.principal_id])
}

reasons := sort(enforced_asks) if ask

reasons := sort(enforced) if not runnable

# The registry entry only for a call that runs (now, or once approved): a denied one must not describe
# a tool the principal may not even know about.
default tool := null

tool := tools.entry if runnable

# Likewise a session sandbox only for a call that runs: a denied call's
# decision (and audit event) must not claim a sandbox that is kept alive for
# it. airlock.sandbox cannot decide this itself, since its deny feeds `allow`
# and no package imports this one.
sandbox_obligation := sandbox.obligation if runnable

sandbox_obligation := sandbox.ephemeral if not runnable

# The same for acknowledging a computer call's pending safety checks: only a
# call that runs may have them acknowledged on its behalf.
computer_obligation := computer.obligation if runnable

computer_obligation := computer.none if not runnable

# --- Shadow mode -------------------------------------------------------------

enforced contains reason if {
	some reason in deny
	not shadowed_reason(reason)
}

shadowed contains reason if {
	some reason in deny
	shadowed_reason(reason)
}

# Asks are shadowed by the same config: a shadowed ask is reported
# (shadow_asks; the audit event says would_ask) and the call runs.
enforced_asks contains reason if {
	some reason in approvals.ask
	not shadowed_reason(reason)
}

shadowed_asks contains reason if {
	some reason in approvals.ask
	shadowed_reason(reason)
}

# Report-only mode is for rolling out new rules, never for running a tool the
# principal was not granted (or with no profile, hence no caps): these codes
# are enforced whatever the shadow config says. base_not_granted is the same
# rule for a dynamic tool: it never runs on a base the principal lacks.
# computer_not_enabled is the same for a computer tool: every other
# airlock.computer rule needs the profile's computer section, so a shadowed
# one would run the actions unchecked.
unshadowable := {
	"tool_not_granted",
	"unknown_profile",
	"base_not_granted",
	"computer_not_enabled",
	"safety_checks_not_acknowledged",
}

default shadow_config := {}

shadow_config := data.airlock.config.shadow

shadowed_reason(reason) if {
	not reason.code in unshadowable
	shadow_selected(reason)
}

shadow_selected(_) if shadow_config.all == true

shadow_selected(reason) if reason.package in shadow_config.packages

shadow_selected(reason) if reason.code in shadow_config.codes

# --- Deny reasons ------------------------------------------------------------

deny contains reason if some reason in arguments.deny

deny contains reason if some reason in approvals.deny

deny contains reason if some reason in egress.deny

deny contains reason if some reason in budget.deny

deny contains reason if some reason in sandbox.deny

deny contains reason if some reason in limits.deny

deny contains reason if some reason in computer.deny

deny contains reason if some reason in images.deny

# A dynamic tool's admission, re-checked on every call under the current
# policy (only the checks that concern the definition, not who may define).
deny contains reason if {
	tools.dynamic
	some reason in tool_definitions.deny
}

# One message whether the tool is unregistered or merely ungranted, so callers
# cannot probe the registry for tools they are not allowed to see.
deny contains core("tool_not_granted", msg) if {
	not tools.entry
	msg := sprintf("tool %q is not available to principal %q", [tools.name, tools.principal_id])
}

deny contains core("unknown_profile", msg) if {
	not tools.profile
	msg := sprintf("principal %q has unknown profile %q", [tools.principal_id, tools.profile_name])
}

# The remaining checks need the registry entry, so they only run for a granted
# tool; an ungranted one must look exactly like an unknown one. The other
# packages follow the same rule.
deny contains core("item_type_mismatch", msg) if {
	got := object.get(input, ["call", "item_type"], "")
	got != tools.entry.item_type
	msg := sprintf("tool %q expects item type %q, got %q", [tools.name, tools.entry.item_type, got])
}

deny contains core("arguments_invalid", msg) if {
	tools.entry
	errors := object.get(input, ["call", "arguments_errors"], [])
	count(errors) > 0
	msg := sprintf("arguments for tool %q are invalid: %v", [tools.name, errors[0]])
}

# Denied rather than run without network: the tool would only fail later, in a
# way that is harder for the caller to understand.
deny contains core("network_not_permitted", msg) if {
	network.needed
	not network.permitted
	msg := sprintf("tool %q needs network, which profile %q does not permit", [tools.name, tools.profile_name])
}

core(code, message) := {"code": code, "message": message, "package": "airlock"}
