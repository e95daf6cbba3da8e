package airlock.limits_test

import data.airlock.limits

art_caps := {
	"max_outputs": 16,
	"max_output_bytes": 1048576,
	"max_output_file_bytes": 524288,
	"max_inputs": 2,
	"max_input_bytes": 1048576,
}

art_grants := {"profiles": {"p": {"tools": ["t"], "limits": {}, "artifacts": art_caps}}}

art_tools(arts) := {"t": {"name": "t", "artifacts": arts}}

art_call(args) := {"principal": {"id": "a", "profile": "p"}, "call": {"tool": "t", "arguments": args}}

test_both_sides_declared_get_the_profile_caps if {
	got := limits.artifacts with input as art_call({})
		with data.airlock.grants as art_grants
		with data.registry.tools as art_tools({"inputs": "inputs", "outputs": true})
	got == art_caps
}

test_no_outputs_declared_collects_nothing if {
	got := limits.artifacts with input as art_call({})
		with data.airlock.grants as art_grants
		with data.registry.tools as art_tools({"inputs": "inputs", "outputs": false})
	got.max_outputs == 0
	got.max_output_bytes == 0
	got.max_inputs == 2
}

test_no_inputs_declared_allows_none if {
	got := limits.artifacts with input as art_call({})
		with data.airlock.grants as art_grants
		with data.registry.tools as art_tools({"inputs": "", "outputs": true})
	got.max_inputs == 0
	got.max_input_bytes == 0
	got.max_outputs == 16
}

test_profile_without_caps_grants_nothing if {
	got := limits.artifacts with input as art_call({})
		with data.airlock.grants as {"profiles": {"p": {"tools": ["t"], "limits": {}}}}
		with data.registry.tools as art_tools({"inputs": "inputs", "outputs": true})
	every _, v in got {
		v == 0
	}
}

test_bad_cap_counts_as_zero if {
	bad := object.union(art_caps, {"max_outputs": -1, "max_inputs": "many", "max_output_bytes": 1.5})
	got := limits.artifacts with input as art_call({})
		with data.airlock.grants as {"profiles": {"p": {"tools": ["t"], "limits": {}, "artifacts": bad}}}
		with data.registry.tools as art_tools({"inputs": "inputs", "outputs": true})
	got.max_outputs == 0
	got.max_inputs == 0
	got.max_output_bytes == 0
}

test_inputs_too_many_denied if {
	reasons := limits.deny with input as art_call({"inputs": ["a", "b", "c"]})
		with data.airlock.grants as art_grants
		with data.registry.tools as art_tools({"inputs": "inputs", "outputs": true})
	some r in reasons
	r.code == "inputs_too_many"
}

test_inputs_within_cap_not_denied if {
	reasons := limits.deny with input as art_call({"inputs": ["a", "b"]})
		with data.airlock.grants as art_grants
		with data.registry.tools as art_tools({"inputs": "inputs", "outputs": true})
	count(reasons) == 0
}
