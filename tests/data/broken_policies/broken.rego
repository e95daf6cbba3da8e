# Deliberately broken decision documents: the gateway must deny on each,
# with its own reason code. Loaded by tests/integration/test_fail_closed.py
# into a real OPA; never part of the shipped bundle.
package broken

# No rule matches: OPA answers 200 without "result".
undefined := {"allow": true} if input.never_set == "x"

# Defined, but not a decision document.
malformed := "allow"

# Looks like a decision but allow is a string, not a boolean.
half_right := {"allow": "true", "reasons": [{"code": "allowed", "message": "ok"}], "obligations": {}}

# Two complete definitions with different values for the same input: OPA
# fails the query at run time (HTTP 500, eval_conflict_error).
conflict := input.call.tool if input.call
conflict := input.call.call_id if input.call

# Takes seconds to evaluate: longer than the gateway's OPA timeout.
slow := {"allow": true, "reasons": [{"code": "allowed", "message": "slow"}]} if {
	count([x | some x in numbers.range(1, 1000000); x % 7 == 0]) > 0
}
