# Computer use: the actions a Responses API computer_call may run against its
# desktop sandbox (a kiosk browser on a virtual display). Only calls of a
# granted tool whose registry entry has item_type computer_call are looked at,
# and only under the profile's `computer` section in grants
# (profiles.<p>.computer): which action types, which key presses, which typed
# text, how many actions per session, and whether pending safety checks may
# be acknowledged. A call is one batch of actions decided as a whole: one
# denied action denies the call. The gateway's JSON-Schema check of the same
# arguments happens earlier (arguments_invalid); the checks here fail closed on
# their own anyway. decision.rego hands `obligation` to an allowed call only.
package airlock.computer

import data.airlock.tools

# --- Scope and settings ------------------------------------------------------

# tools.entry is defined only for a granted, registered tool, so nothing below
# can reveal an ungranted computer tool.
in_scope if tools.entry.item_type == "computer_call"

settings := tools.profile.computer if in_scope

# Every rule but computer_not_enabled needs the section: without it there is
# nothing to check against, and that one reason says why.
enabled if is_object(settings)

# A list setting that is absent means "none" (no action type, no denied key,
# no pattern); one that is not a list is refused below.
setting(key) := object.get(settings, key, [])

# Settings that must be lists, each with the code of the rule it feeds.
array_settings := {
	"actions": "computer_action_not_allowed",
	"allowed_held_keys": "computer_key_denied",
	"allowed_buttons": "computer_button_denied",
	"denied_keys": "computer_key_denied",
	"denied_single_keys": "computer_key_denied",
	"text_deny_patterns": "computer_text_denied",
}

# --- Deny reasons ------------------------------------------------------------

# Fail closed: a granted computer tool with no `computer` section runs nothing.
# decision.rego never shadows it either, since every other rule here needs
# the section and a shadowed one would run the call unchecked.
deny contains reason(
	"computer_not_enabled",
	sprintf("tool %q is a computer-use tool and profile %q has no computer section", [tools.name, tools.profile_name]),
) if {
	in_scope
	not enabled
}

deny contains reason(code, msg) if {
	enabled
	some key, code in array_settings
	not is_array(setting(key))
	msg := sprintf(
		"computer.%s of profile %q is not a list; refusing every call of tool %q",
		[key, tools.profile_name, tools.name],
	)
}

deny contains reason(
	"computer_action_malformed",
	sprintf("arguments of tool %q have no list of actions", [tools.name]),
) if {
	enabled
	not is_array(actions)
}

deny contains reason(
	"computer_action_malformed",
	sprintf("actions[%d] of tool %q is not an object", [i, tools.name]),
) if {
	some i, action in action_list
	not is_object(action)
}

deny contains reason(
	"computer_action_malformed",
	sprintf("actions[%d] of tool %q has no type", [i, tools.name]),
) if {
	some i, action in action_list
	is_object(action)
	not string_field(action, "type")
}

# Without a list of key names the key rules below would see nothing (fail open).
deny contains reason(
	"computer_action_malformed",
	sprintf("actions[%d] (keypress) of tool %q must have keys, a list of key names", [i, tools.name]),
) if {
	some i, action in action_list
	action.type == "keypress"
	not string_list_field(action, "keys")
}

deny contains reason(
	"computer_action_malformed",
	sprintf("actions[%d] (type) of tool %q must have text, a string", [i, tools.name]),
) if {
	some i, action in action_list
	action.type == "type"
	not string_field(action, "text")
}

deny contains reason(
	"computer_action_malformed",
	sprintf("pending_safety_checks of tool %q must be a list", [tools.name]),
) if {
	not is_array(pending_checks)
	pending_checks != null
}

# The type is the model's, so it is cut short in the message.
deny contains reason(
	"computer_action_not_allowed",
	sprintf(
		"actions[%d] of tool %q has type %q, which profile %q does not allow",
		[i, tools.name, substring(kind, 0, 32), tools.profile_name],
	),
) if {
	some i, action in action_list
	kind := action.type
	is_string(kind)
	not kind in setting("actions")
}

# The message names the operator's entry, never what the model sent.
deny contains reason(
	"computer_key_denied",
	key_message(i, combo.label),
) if {
	some i, pressed in keypresses
	some combo in denied_combos
	combo.keys & pressed == combo.keys
}

deny contains reason(
	"computer_key_denied",
	key_message(i, key),
) if {
	some i, pressed in keypresses
	some key in (pressed & denied_single_keys)
}

# Keys held during a click, scroll, move or drag: only the ones the profile
# allows (CTRL+click opens a link in a new tab, which the kiosk's denied
# combos exist to prevent). A held-keys field that is not a list of names is
# malformed, so it cannot hide a key.
deny contains reason(
	"computer_key_denied",
	sprintf(
		"actions[%d] (%q) of tool %q holds a key that profile %q does not allow",
		[i, substring(action.type, 0, 32), tools.name, tools.profile_name],
	),
) if {
	some i, action in action_list
	action.type != "keypress"
	string_list_field(action, "keys")
	some key in key_set(action.keys)
	not key in key_set(setting("allowed_held_keys"))
}

deny contains reason(
	"computer_action_malformed",
	sprintf("actions[%d] of tool %q holds keys that are not a list of key names", [i, tools.name]),
) if {
	some i, action in action_list
	action.type != "keypress"
	"keys" in object.keys(action)
	not string_list_field(action, "keys")
}

# Only the buttons the profile allows (shipped: left). Right opens the
# browser's context menu (inspect, save, print, open in a new window), the
# wheel button opens a link in a new tab, back and forward navigate. A click
# without a button is a left click, as act.py runs it.
deny contains reason(
	"computer_button_denied",
	sprintf(
		"actions[%d] of tool %q presses a mouse button that profile %q does not allow",
		[i, tools.name, tools.profile_name],
	),
) if {
	some i, action in action_list
	action.type == "click"
	not object.get(action, "button", "left") in setting("allowed_buttons")
}

# A key entry that is not a key list would silently deny nothing: refuse instead.
deny contains invalid_key_entry("denied_keys", i) if {
	some i, entry in setting("denied_keys")
	not valid_combo(entry)
}

deny contains invalid_key_entry("denied_single_keys", i) if {
	some i, entry in setting("denied_single_keys")
	not is_string(entry)
}

# Never the text itself: it may be a password the model was asked to type.
deny contains reason(
	"computer_text_denied",
	sprintf("actions[%d] (type) of tool %q types text matching deny pattern %q", [i, tools.name, pattern]),
) if {
	some i, text in typed_texts
	some pattern in setting("text_deny_patterns")
	is_string(pattern)
	regex.match(pattern, text)
}

# The batch's typed text as one string too: "java" then "script:" in two
# actions types the same as one.
deny contains reason(
	"computer_text_denied",
	sprintf("the typed text of tool %q's batch, joined, matches deny pattern %q", [tools.name, pattern]),
) if {
	count(typed_texts) > 1
	some pattern in setting("text_deny_patterns")
	is_string(pattern)
	regex.match(pattern, joined_text)
	not single_text_match(pattern)
}

# An invalid pattern makes regex.match undefined, which would read as "no
# match": a typo in the data would switch the rule off. Every computer call is
# refused instead, so the operator sees it at once, not on the first `type`.
deny contains reason(
	"computer_text_denied",
	sprintf(
		"computer.text_deny_patterns[%d] of profile %q is not a valid regex; refusing rather than skipping it",
		[i, tools.profile_name],
	),
) if {
	enabled
	some i, pattern in setting("text_deny_patterns")
	not valid_pattern(pattern)
}

# `used` counts the actions of the session's earlier allowed calls, so a call
# that would take the total past the limit is refused as a whole.
deny contains reason(
	"computer_action_budget_exceeded",
	sprintf(
		"tool %q: %d actions run in this session and %d in this call exceed max_session_actions %d; start a new session",
		[tools.name, used_actions, count(action_list), max_session_actions],
	),
) if {
	used_actions + count(action_list) > max_session_actions
}

# A pending safety check means OpenAI saw something (instructions on the page,
# an irrelevant or sensitive domain) that a human should look at: unless the
# profile says so in so many words, the call is refused and the agent stops.
deny contains reason(
	"safety_checks_not_acknowledged",
	sprintf(
		"the call of tool %q carries %d pending safety checks (%s); profile %q does not acknowledge them",
		[tools.name, count(pending_checks), check_codes, tools.profile_name],
	),
) if {
	has_pending_checks
	not acknowledges
}

reason(code, message) := {"code": code, "message": message, "package": "airlock.computer"}

key_message(i, label) := sprintf(
	"actions[%d] (keypress) of tool %q presses %s, which profile %q denies",
	[i, tools.name, label, tools.profile_name],
)

invalid_key_entry(key, i) := reason(
	"computer_key_denied",
	sprintf(
		"computer.%s[%d] of profile %q is not a key list; refusing rather than skipping it",
		[key, i, tools.profile_name],
	),
)

# --- Obligation --------------------------------------------------------------

none := {"acknowledge_safety_checks": false}

# METADATA
# scope: document
# title: Computer obligation
# description: >-
#   {"acknowledge_safety_checks": true} when the call carries pending safety
#   checks and the profile acknowledges them (the agent then sends them back
#   as acknowledged); false otherwise. Always defined.
default obligation := {"acknowledge_safety_checks": false}

obligation := {"acknowledge_safety_checks": true} if {
	has_pending_checks
	acknowledges
}

# In so many words: anything but true (absent, "yes", 1) is no.
acknowledges if settings.acknowledge_safety_checks == true

# --- The call ------------------------------------------------------------------

# Undefined unless enabled, so every action rule needs the section.
actions := object.get(tools.arguments, "actions", null) if enabled

# The actions, when they are a list; anything else is malformed above.
action_list := actions if is_array(actions)

# Absent is null, which is none; anything else that is not a list is malformed.
pending_checks := object.get(tools.arguments, "pending_safety_checks", null) if enabled

has_pending_checks if {
	is_array(pending_checks)
	count(pending_checks) > 0
}

# The checks' codes (malicious_instructions, irrelevant_domain,
# sensitive_domain) say why; their messages are left to the audit log.
default check_codes := "no code given"

check_codes := concat(", ", codes) if {
	codes := [check.code | some check in pending_checks; is_string(check.code)]
	count(codes) > 0
}

# Action index -> the set of keys it presses (normalized).
keypresses[i] := key_set(action.keys) if {
	some i, action in action_list
	action.type == "keypress"
	string_list(action.keys)
}

typed_texts[i] := action.text if {
	some i, action in action_list
	action.type == "type"
	is_string(action.text)
}

# Through these: `not is_string(action.type)` is not true for an action
# without a type (OPA binds the undefined ref outside the negation, so the
# whole expression is undefined) and the malformed rules would never fire.
string_field(obj, key) if is_string(obj[key])

string_list_field(obj, key) if string_list(obj[key])

string_list(value) if {
	is_array(value)
	every element in value {
		is_string(element)
	}
}

# --- Keys ----------------------------------------------------------------------

# Names the Responses API, xdotool and people use for the same key.
key_aliases := {
	"CONTROL": "CTRL",
	"CMD": "META",
	"COMMAND": "META",
	"SUPER": "META",
	"WIN": "META",
	"WINDOWS": "META",
	"OPTION": "ALT",
	"ARROWLEFT": "LEFT",
	"ARROWRIGHT": "RIGHT",
	"ARROWUP": "UP",
	"ARROWDOWN": "DOWN",
	"ESCAPE": "ESC",
	"DEL": "DELETE",
	"RETURN": "ENTER",
}

# Upper-cased and de-aliased; an element written as a chord ("CTRL+L", or
# "ctrl l") counts as its keys, since that is how it may reach the display.
key_set(keys) := {normal_key(part) |
	some key in keys
	some part in regex.split(`[+\s]+`, key)
	part != ""
}

normal_key(key) := object.get(key_aliases, upper(key), upper(key))

# A denied combo is matched when the keypress holds all of its keys, extra
# keys or not: a chord pressed together fires CTRL+L whatever else is held
# (["CTRL", "L", "X"]). An entry may be a list or a "CTRL+L" string.
denied_combos contains {"keys": key_set(keys), "label": concat("+", [normal_key(k) | some k in keys; k != ""])} if {
	some entry in setting("denied_keys")
	valid_combo(entry)
	keys := combo_keys(entry)
}

combo_keys(entry) := regex.split(`[+\s]+`, trim_space(entry)) if is_string(entry)

combo_keys(entry) := entry if is_array(entry)

valid_combo(entry) if {
	is_string(entry)
	trim_space(entry) != ""
}

valid_combo(entry) if {
	string_list(entry)
	count(key_set(entry)) > 0
}

denied_single_keys contains normal_key(key) if {
	some key in setting("denied_single_keys")
	is_string(key)
}

valid_pattern(pattern) if {
	is_string(pattern)
	regex.is_valid(pattern)
}

# --- Budget --------------------------------------------------------------------

# Absent or non-numeric: 0 (Decide sends the counts without reserving).
default used_actions := 0

used_actions := max([0, n]) if {
	n := input.counters.session_computer_actions
	is_number(n)
}

# A missing or invalid limit is 0: only an empty batch fits.
default max_session_actions := 0

max_session_actions := n if {
	n := settings.max_session_actions
	is_number(n)
	n >= 0
}

# The batch's typed text, in order, as one string.
joined_text := concat("", [typed_texts[i] | some i in sort(object.keys(typed_texts))])

single_text_match(pattern) if {
	some text in typed_texts
	regex.match(pattern, text)
}
