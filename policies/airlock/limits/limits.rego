# Resource caps handed to the sandbox as obligations.
package airlock.limits

import data.airlock.tools

# Each limit is the tightest of the profile cap, the tool's own cap and the
# caller's request. A request above a cap is clamped rather than denied: models
# routinely ask for generous timeouts or output sizes, and failing the call
# would gain nothing since the sandbox enforces the effective value anyway.
# Keys come from the profile, so an unknown profile yields {} (no caps to grant).
effective[key] := min(bounds(key, profile_cap(key, cap))) if some key, cap in tools.profile.limits

# A profile may set other caps for one tool (profiles.<p>.tool_limits.<tool>):
# a desktop's browser needs more memory and processes than a python call, and
# raising the profile's caps for every tool to fit it would loosen the rest.
# Only a positive number counts; anything else leaves the profile's cap.
profile_cap(key, cap) := v if {
	v := tools.profile.tool_limits[tools.registry_name][key]
	is_number(v)
	v > 0
} else := cap

bounds(key, cap) := ({cap} | tool_cap(key)) | requested(key)

# Registry limits are optional per key; absent means only the profile cap applies.
tool_cap(key) := {v | v := tools.entry.limits[key]}

# A zero, negative or non-numeric request means "no preference", never "unlimited".
requested(key) := {v |
	v := input.call.requested_limits[key]
	is_number(v)
	v > 0
}
