# Artifact limits handed to the executor as obligations.artifacts, and the
# one artifact check that needs nothing but the call: how many inputs it names.
package airlock.limits

import data.airlock.tools

# What each artifacts key caps, and which side of the tool it needs.
artifact_sides := {
	"max_outputs": "outputs",
	"max_output_bytes": "outputs",
	"max_output_file_bytes": "outputs",
	"max_inputs": "inputs",
	"max_input_bytes": "inputs",
}

# The profile's cap for what the tool declares (registry `artifacts`), else 0:
# a tool that declares no outputs has nothing collected, one without an inputs
# argument may name none, and a profile without `artifacts` caps grants
# neither. A cap that is not a non-negative integer counts as 0 (closed).
artifacts[key] := artifact_cap(key, side) if some key, side in artifact_sides

artifact_cap(key, side) := cap if {
	tool_declares(side)
	cap := tools.profile.artifacts[key]
	is_number(cap)
	cap >= 0
	cap == floor(cap)
} else := 0

tool_declares("outputs") if tools.entry.artifacts.outputs == true

tool_declares("inputs") if tools.entry.artifacts.inputs != ""

# The artifact ids the call names in the tool's inputs argument (the schema
# check makes it an array; anything else names none here and fails there).
named_inputs := tools.arguments[tools.entry.artifacts.inputs] if tool_declares("inputs")

deny contains {"code": "inputs_too_many", "message": msg, "package": "airlock.limits"} if {
	is_array(named_inputs)
	count(named_inputs) > artifacts.max_inputs
	msg := sprintf("the call names %d input artifacts; at most %d", [count(named_inputs), artifacts.max_inputs])
}
