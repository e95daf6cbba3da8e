# Tool minimization: a principal may only use tools that are both registered
# and granted to it, and sees nothing about any other tool.
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

available contains tool if {
	some tool in granted
	tool in object.keys(data.registry.tools)
}

# Defined only for an available tool, so nothing derived from the registry
# (limits, egress allowlist, item type) can reveal that an ungranted tool exists.
entry := data.registry.tools[name] if name in available
