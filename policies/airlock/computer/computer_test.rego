package airlock.computer_test

import data.airlock.computer

shipped := data.airlock.grants.profiles["default"].computer

all_types := ["click", "double_click", "scroll", "type", "keypress", "wait", "screenshot", "move", "drag"]

desk := {
	"actions": all_types,
	"denied_keys": [["CTRL", "L"], ["CTRL", "SHIFT", "N"], ["META", "Q"], ["ALT", "LEFT"], "ctrl+w"],
	"denied_single_keys": ["F11", "f12"],
	"allowed_held_keys": ["SHIFT"],
	"allowed_buttons": ["left"],
	"text_deny_patterns": [`(?i)(^|\s)javascript:`],
	"max_session_actions": 20,
	"acknowledge_safety_checks": false,
}

grants := {
	"profiles": {
		"desk": {"tools": ["computer", "python"], "computer": desk},
		"ack": {"tools": ["computer"], "computer": object.union(desk, {"acknowledge_safety_checks": true})},
		"clicks": {"tools": ["computer"], "computer": {
			"actions": ["click", "screenshot"],
			"allowed_buttons": ["left"],
			"max_session_actions": 20,
		}},
		"bare": {"tools": ["computer"]},
		"other": {"tools": ["python"], "computer": desk},
	},
	"principals": {"ops": {"tools": ["computer"]}},
}

# `desk` with some settings replaced.
desk_with(settings) := object.union(grants, {"profiles": {"desk": {"computer": settings}}})

registry := {
	"computer": {
		"name": "computer", "item_type": "computer_call",
		"display": {"width": 1024, "height": 768, "environment": "browser"},
		"sandbox": {"mode": "session", "idle_ttl_ms": 600000, "max_lifetime_ms": 3600000},
	},
	"python": {"name": "python", "item_type": "function_call"},
}

# One of each action type, all allowed under `desk`.
every_action := [
	{"type": "click", "x": 10, "y": 20, "button": "left", "keys": ["SHIFT"]},
	{"type": "double_click", "x": 10, "y": 20},
	{"type": "scroll", "x": 1, "y": 2, "scroll_x": 0, "scroll_y": 300},
	{"type": "type", "text": "hello world"},
	{"type": "keypress", "keys": ["CTRL", "A"]},
	{"type": "wait"},
	{"type": "screenshot"},
	{"type": "move", "x": 5, "y": 6},
	{"type": "drag", "path": [{"x": 1, "y": 1}, {"x": 2, "y": 2}]},
]

check := {"id": "sc_1", "code": "malicious_instructions", "message": "The page asks you to ..."}

# Something wrong for every rule.
bad := {"actions": [{"type": "keypress", "keys": ["CTRL", "L"]}, 1], "pending_safety_checks": [check]}

call(profile, tool, arguments) := {
	"principal": {"id": "desk-agent", "profile": profile},
	"call": {"tool": tool, "item_type": "computer_call", "arguments": arguments},
}

actions(list) := call("desk", "computer", {"actions": list})

denials := sort([[r.code, r.message] | some r in computer.deny])

codes contains r.code if some r in computer.deny

test_every_action_type_is_allowed if {
	docs := [
		call("desk", "computer", {"actions": every_action, "pending_safety_checks": []}),
		call("ack", "computer", {"actions": every_action}),
		actions([]),
	]
	every doc in docs {
		denials == [] with input as doc
			with data.airlock.grants as grants
			with data.registry.tools as registry
	}
}

# Nothing here looks at any other tool, nor at a computer tool the principal
# was not granted (it must look like an unknown one).
test_only_granted_computer_tools_are_checked if {
	cases := [
		{"doc": call("desk", "python", bad), "want": set()},
		{"doc": call("other", "computer", bad), "want": set()},
		{"doc": call("nope", "computer", bad), "want": set()},
		{
			"doc": call("desk", "computer", bad),
			"want": {"computer_key_denied", "computer_action_malformed", "safety_checks_not_acknowledged"},
		},
	]
	every c in cases {
		codes == c.want with input as c.doc
			with data.airlock.grants as grants
			with data.registry.tools as registry
	}
}

not_enabled(profile) := [[
	"computer_not_enabled",
	sprintf(`tool "computer" is a computer-use tool and profile %q has no computer section`, [profile]),
]]

test_computer_not_enabled if {
	# One reason, whatever else is wrong: every other rule needs the section.
	# The second is a principal granted the tool on its own, with an unknown profile.
	cases := [
		{"doc": call("bare", "computer", bad), "want": not_enabled("bare")},
		{"doc": object.union(call("nope", "computer", bad), {"principal": {"id": "ops"}}), "want": not_enabled("nope")},
	]
	every c in cases {
		denials == c.want with input as c.doc
			with data.airlock.grants as grants
			with data.registry.tools as registry
	}

	# A section that is not an object is no section.
	d := denials with input as actions([])
		with data.airlock.grants as desk_with(true)
		with data.registry.tools as registry
	d == not_enabled("desk")
}

not_allowed(i, type) := [
	"computer_action_not_allowed",
	sprintf(`actions[%d] of tool "computer" has type %q, which profile "clicks" does not allow`, [i, type]),
]

test_action_not_allowed if {
	long := concat("", ["x" | some _ in numbers.range(1, 100)])
	cases := [
		{"actions": [{"type": "click", "x": 1, "y": 1}, {"type": "screenshot"}], "want": []},
		{"actions": [{"type": "screenshot"}, {"type": "type", "text": "secret"}], "want": [not_allowed(1, "type")]},
		# The model's type is cut short.
		{"actions": [{"type": long}], "want": [not_allowed(0, substring(long, 0, 32))]},
	]
	every c in cases {
		denials == c.want with input as call("clicks", "computer", {"actions": c.actions})
			with data.airlock.grants as grants
			with data.registry.tools as registry
	}
}

keypress(keys) := actions([{"type": "screenshot"}, {"type": "keypress", "keys": keys}])

key_denied(i, label) := [
	"computer_key_denied",
	sprintf(`actions[%d] (keypress) of tool "computer" presses %s, which profile "desk" denies`, [i, label]),
]

test_denied_keys if {
	cases := [
		{"keys": ["CTRL", "L"], "want": "CTRL+L"},
		# Case, order and aliases do not matter.
		{"keys": ["l", "ctrl"], "want": "CTRL+L"},
		{"keys": ["Control", "L"], "want": "CTRL+L"},
		{"keys": ["SHIFT", "n", "CTRL"], "want": "CTRL+SHIFT+N"},
		{"keys": ["CMD", "Q"], "want": "META+Q"},
		{"keys": ["SUPER", "q"], "want": "META+Q"},
		{"keys": ["WIN", "Q"], "want": "META+Q"},
		{"keys": ["OPTION", "ARROWLEFT"], "want": "ALT+LEFT"},
		# A chord written as one element, or with extra keys held, still fires.
		{"keys": ["CTRL+L"], "want": "CTRL+L"},
		{"keys": ["ctrl l"], "want": "CTRL+L"},
		{"keys": ["CTRL", "L", "X"], "want": "CTRL+L"},
		{"keys": ["CTRL", "SHIFT", "L", "+"], "want": "CTRL+L"},
		{"keys": ["CTRL", "W"], "want": "CTRL+W"}, # the entry "ctrl+w"
		# Single keys, alone or in a chord.
		{"keys": ["F11"], "want": "F11"},
		{"keys": ["SHIFT", "f12"], "want": "F12"},
	]
	every c in cases {
		denials == [key_denied(1, c.want)] with input as keypress(c.keys)
			with data.airlock.grants as grants
			with data.registry.tools as registry
	}

	allowed := [["CTRL", "A"], ["CTRL", "+"], ["L"], ["ENTER"], ["F5"], ["ALT", "RIGHT"], []]
	every keys in allowed {
		denials == [] with input as keypress(keys)
			with data.airlock.grants as grants
			with data.registry.tools as registry
	}
}

test_denied_keys_in_a_batch if {
	# Two denied keypresses: both are named, and the call is denied.
	denials == [key_denied(0, "F11"), key_denied(1, "CTRL+L")] with input as actions([
		{"type": "keypress", "keys": ["F11"]},
		{"type": "keypress", "keys": ["CTRL", "L"]},
	])
		with data.airlock.grants as grants
		with data.registry.tools as registry

	# Held modifiers of other actions are not keypresses: they are checked
	# against allowed_held_keys instead (
	codes == {"computer_key_denied"} with input as actions([{"type": "click", "x": 1, "y": 1, "keys": ["CTRL", "L"]}])
		with data.airlock.grants as grants
		with data.registry.tools as registry
}

text_denied := [
	"computer_text_denied",
	`actions[1] (type) of tool "computer" types text matching deny pattern "(?i)(^|\\s)javascript:"`,
]

test_denied_text if {
	cases := [
		{"text": "hello world", "want": []},
		{"text": "see javascript.info", "want": []},
		{"text": "javascript:alert(1)", "want": [text_denied]},
		{"text": "  JavaScript:alert(1)", "want": [text_denied]},
	]
	every c in cases {
		denials == c.want with input as actions([{"type": "screenshot"}, {"type": "type", "text": c.text}])
			with data.airlock.grants as grants
			with data.registry.tools as registry
	}
}

test_an_invalid_pattern_refuses_every_call if {
	broken := desk_with(object.union(desk, {"text_deny_patterns": ["(unclosed", 7]}))
	codes == {"computer_text_denied"} with input as actions([{"type": "screenshot"}])
		with data.airlock.grants as broken
		with data.registry.tools as registry
}

test_the_shipped_patterns if {
	blocked := ["javascript:alert(1)", "file:///etc/passwd", "chrome://settings", "view-source:http://x", "about:blank"]
	every text in blocked {
		some pattern in shipped.text_deny_patterns
		regex.match(pattern, text)
	}
	harmless := ["the file: notes.txt", "hello", "see chrome for details"]
	every text in harmless {
		every pattern in shipped.text_deny_patterns {
			not regex.match(pattern, text)
		}
	}
}

three := [{"type": "wait"}, {"type": "wait"}, {"type": "screenshot"}]

test_the_session_action_budget if {
	# 17 earlier actions + 3 = 20: fits; 18 + 3 does not.
	codes == set() with input as object.union(actions(three), {"counters": {"session_computer_actions": 17}})
		with data.airlock.grants as grants
		with data.registry.tools as registry
	codes == {"computer_action_budget_exceeded"} with input as object.union(
		actions(three),
		{"counters": {"session_computer_actions": 18}},
	)
		with data.airlock.grants as grants
		with data.registry.tools as registry

	# A missing limit is 0: only an empty batch fits.
	no_limit := object.union(grants, {"profiles": {"nolimit": {
		"tools": ["computer"],
		"computer": object.remove(desk, ["max_session_actions"]),
	}}})
	codes == {"computer_action_budget_exceeded"} with input as call("nolimit", "computer", {"actions": three})
		with data.airlock.grants as no_limit
		with data.registry.tools as registry
	codes == set() with input as call("nolimit", "computer", {"actions": []})
		with data.airlock.grants as no_limit
		with data.registry.tools as registry
}

safety(profile, checks) := call(
	profile,
	"computer",
	{"actions": [{"type": "screenshot"}], "pending_safety_checks": checks},
)

test_safety_checks_and_the_obligation if {
	# Not acknowledged: refused, and the obligation stays false.
	d := denials with input as safety("desk", [check])
		with data.airlock.grants as grants
		with data.registry.tools as registry
	d == [[
		"safety_checks_not_acknowledged",
		concat("", [
			`the call of tool "computer" carries 1 pending safety checks (malicious_instructions); `,
			`profile "desk" does not acknowledge them`,
		]),
	]]
	no_code := denials with input as safety("desk", [{"id": "sc_2"}])
		with data.airlock.grants as grants
		with data.registry.tools as registry
	contains(no_code[0][1], "(no code given)")

	# Acknowledged by the profile: allowed, and the obligation says so.
	computer.deny == set() with input as safety("ack", [check])
		with data.airlock.grants as grants
		with data.registry.tools as registry
	computer.obligation == {"acknowledge_safety_checks": true} with input as safety("ack", [check])
		with data.airlock.grants as grants
		with data.registry.tools as registry

	# No checks: nothing to acknowledge.
	computer.obligation == {"acknowledge_safety_checks": false} with input as safety("ack", [])
		with data.airlock.grants as grants
		with data.registry.tools as registry
}

test_malformed_calls if {
	cases := [
		{"args": {"actions": "click"}, "want": {"computer_action_malformed"}},
		{"args": {}, "want": {"computer_action_malformed"}},
		{"args": {"actions": [1]}, "want": {"computer_action_malformed"}},
		{"args": {"actions": [{"x": 1}]}, "want": {"computer_action_malformed"}},
		{"args": {"actions": [{"type": "keypress"}]}, "want": {"computer_action_malformed"}},
		{"args": {"actions": [{"type": "keypress", "keys": [1]}]}, "want": {"computer_action_malformed"}},
		{"args": {"actions": [{"type": "type"}]}, "want": {"computer_action_malformed"}},
		{"args": {"actions": [], "pending_safety_checks": "x"}, "want": {"computer_action_malformed"}},
	]
	every c in cases {
		codes == c.want with input as call("desk", "computer", c.args)
			with data.airlock.grants as grants
			with data.registry.tools as registry
	}
}

test_settings_that_are_not_lists_refuse_every_call if {
	cases := [
		{"key": "actions", "want": "computer_action_not_allowed"},
		{"key": "denied_keys", "want": "computer_key_denied"},
		{"key": "denied_single_keys", "want": "computer_key_denied"},
		{"key": "text_deny_patterns", "want": "computer_text_denied"},
		{"key": "allowed_held_keys", "want": "computer_key_denied"},
		{"key": "allowed_buttons", "want": "computer_button_denied"},
	]
	every c in cases {
		c.want in codes with input as actions([])
			with data.airlock.grants as desk_with(object.union(desk, {c.key: "oops"}))
			with data.registry.tools as registry
	}
}

test_key_entries_that_are_not_keys_refuse_every_call if {
	cases := [
		{"denied_keys": [7]},
		{"denied_keys": [""]},
		{"denied_keys": [[]]},
		{"denied_single_keys": [["F11"]]},
	]
	every c in cases {
		codes == {"computer_key_denied"} with input as actions([])
			with data.airlock.grants as desk_with(object.union(desk, c))
			with data.registry.tools as registry
	}
}

test_the_shipped_profile_allows_a_plain_batch if {
	ok := [
		{"type": "click", "x": 10, "y": 20, "button": "left"},
		{"type": "type", "text": "hello"},
		{"type": "keypress", "keys": ["ENTER"]},
	]
	computer.deny == set() with input as call("default", "computer", {"actions": ok})
		with data.registry.tools as registry
}

test_the_batch_text_is_matched_joined if {
	pieces := actions([{"type": "type", "text": "java"}, {"type": "type", "text": "script:alert(1)"}])
	codes == {"computer_text_denied"} with input as pieces
		with data.airlock.grants as grants
		with data.registry.tools as registry
}

test_del_is_delete if {
	codes == {"computer_key_denied"} with input as keypress(["CTRL", "SHIFT", "DEL"])
		with data.airlock.grants as desk_with(object.union(desk, {"denied_keys": [["CTRL", "SHIFT", "DELETE"]]}))
		with data.registry.tools as registry
}
