# Tool minimization: a principal may only use tools that are both registered
# and granted to it, and sees nothing about any other tool.
#
# A call of a dynamic tool (one an agent defined with the built-in define_tool;
# see airlock.tool_definitions) carries its definition as input.tool_definition
# and runs as its base tool: grants, the registry entry and everything derived
# from them (limits, egress, sandbox, argument rules) are the base's, looked up
# by registry_name. Messages keep the name the model called (name).
package airlock.tools

# Defaults keep the decision defined for malformed input instead of failing open
# or going undefined; "" never matches a profile or a registered tool.
default name := ""

name := input.call.tool

default principal_id := ""

principal_id := input.principal.id

default profile_name := ""

profile_name := input.principal.profile

profile := data.airlock.grants.profiles[profile_name]

# Grants are additive: a principal entry can widen its profile but never narrow it.
granted contains tool if some tool in profile.tools

granted contains tool if some tool in data.airlock.grants.principals[principal_id].tools

# Tools the gateway implements itself: never run from the registry, so never
# `available` and never an `entry`, even if the registry had one of that name.
builtins := {"define_tool"}

available contains tool if {
	some tool in granted
	not tool in builtins

	# A lookup, not `in object.keys(...)`: that builds the set of every
	# registry name once per granted tool, on every decision.
	data.registry.tools[tool]
}

# What ListTools shows: the available tools plus the granted built-ins.
listed := available | (granted & builtins)

# Any tool_definition other than null makes this a dynamic call, whatever its
# shape: a malformed one then finds no base (registry_name "") rather than
# falling back to the called name, and airlock.tool_definitions denies it.
dynamic if object.get(input, "tool_definition", null) != null

definition := input.tool_definition if dynamic

# The name that keys the registry, grants and per-tool data.
default registry_name := ""

registry_name := name if not dynamic

registry_name := base if {
	base := definition.base
	is_string(base)
}

# Defined only for an available tool, so nothing derived from the registry
# (limits, egress allowlist, item type) can reveal that an ungranted tool exists.
entry := data.registry.tools[registry_name] if registry_name in available

# The arguments the registered tool runs with, which argument rules check. For
# a dynamic call that is the definition's source in the base's dynamic.source
# argument: a base takes no other argument (the registry refuses one whose
# argv uses anything else), and the dynamic tool's own arguments are data for
# that program, checked against the definition's schema (arguments_errors).
default arguments := {}

arguments := input.call.arguments if {
	not dynamic
	is_object(input.call.arguments)
}

arguments := {source: definition.source} if {
	dynamic
	source := entry.dynamic.source
}
