package airlock.computer_test

import data.airlock.computer

held_grants := {"profiles": {"p": {"tools": ["computer"], "computer": {
	"actions": ["click"],
	"allowed_held_keys": ["shift"],
	"allowed_buttons": ["left"],
	"max_session_actions": 10,
}}}}

held_registry := {"computer": {"name": "computer", "item_type": "computer_call"}}

held_doc(action) := {
	"principal": {"id": "a", "profile": "p"},
	"call": {"tool": "computer", "item_type": "computer_call", "arguments": {"actions": [action]}},
}

held_click(extra) := object.union({"type": "click", "x": 1, "y": 1, "button": "left"}, extra)

test_held_keys_only_as_allowed if {
	cases := [
		{"action": held_click({"keys": ["CTRL"]}), "want": {"computer_key_denied"}},
		{"action": held_click({"keys": ["Shift"]}), "want": set()},
		{"action": held_click({"keys": "CTRL"}), "want": {"computer_action_malformed"}},
		{"action": held_click({"button": "back"}), "want": {"computer_button_denied"}},
		{"action": held_click({"button": "forward"}), "want": {"computer_button_denied"}},
		{"action": held_click({"button": "right"}), "want": {"computer_button_denied"}},
		{"action": held_click({"button": "wheel"}), "want": {"computer_button_denied"}},
		{"action": object.remove(held_click({}), ["button"]), "want": set()},
	]
	every c in cases {
		{r.code | some r in computer.deny} == c.want with input as held_doc(c.action)
			with data.airlock.grants as held_grants
			with data.registry.tools as held_registry
	}
}
