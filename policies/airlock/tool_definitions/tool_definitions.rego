# Dynamic tools: whether a tool an agent defined for itself (the built-in
# define_tool) is admitted. The gateway first checks the definition itself
# (name, JSON-Schema validity, size), then asks data.airlock.tool_definitions.decision
# with input {op: "define", principal, session_id, definition, owner_definitions}.
#
# A dynamic tool is a program (definition.source) run by a registered base tool
# (definition.base, one whose registry entry has `dynamic`) with the base's
# caps, sandbox and, only if the definition says `network: true`, its egress.
# So admitting one grants nothing the base does not: a principal may only
# define tools on a base it is granted and its profile lists in
# profiles.<p>.tool_definitions.bases.
#
# Every later call of a dynamic tool is decided by data.airlock.decision with
# the definition as input.tool_definition, which re-runs the admission checks
# here (`deny`) under the policy of the day: a definition admitted yesterday
# stops running once the policy no longer admits it. The define-only checks
# (`define_deny`: may this principal define tools, how many) do not apply to a
# call, since a promoted tool may be used by principals that may not define
# tools. Neighbours: airlock.tools (grants, registry_name), airlock.network
# (whether a base may have egress).
package airlock.tool_definitions

import data.airlock.network
import data.airlock.tools

# METADATA
# title: Admission of a tool definition
# description: >-
#   {"allow", "reasons"} for op "define": allow only when nothing denies, with
#   exactly one reason ("admitted"); otherwise the deny reasons, sorted. Always
#   defined. Shadow mode does not apply: admission is always enforced.
# entrypoint: true
decision := {"allow": allow, "reasons": reasons}

default allow := false

allow if {
	define_request
	count(define_reasons) == 0
}

reasons := [reason("admitted", msg)] if {
	allow
	msg := sprintf(
		"tool %q on base %q is admitted for principal %q",
		[definition.name, definition.base, tools.principal_id],
	)
}

reasons := sort(define_reasons) if not allow

define_reasons := deny | define_deny

# --- What is checked ---------------------------------------------------------

default op := ""

op := input.op

# A define request carries no tool_definition: that key makes any input a
# call of a dynamic tool (airlock.tools.dynamic), checked as such.
define_request if {
	op == "define"
	not tools.dynamic
}

# The definition being defined, or the one being called (from data.airlock.decision).
definition := input.tool_definition if tools.dynamic

definition := input.definition if define_request

expected if tools.dynamic

expected if define_request

default settings := {}

# profiles.<p>.tool_definitions: bases, max_source_bytes, max_definitions.
settings := tools.profile.tool_definitions

enabled if {
	is_object(settings)
	count(settings) > 0
}

# A limit that is missing or not a non-negative integer is 0: nothing fits.
limit(key) := value if {
	value := settings[key]
	is_number(value)
	value >= 0
	value == floor(value)
} else := 0

# The base's name for messages; "" when the definition has none.
default base_name := ""

base_name := definition.base if is_string(definition.base)

# The base's registry entry, only for a base granted to the principal, so no
# check can tell an ungranted base from an unregistered one.
base_entry := data.registry.tools[definition.base] if definition.base in tools.available

# --- Shape -------------------------------------------------------------------

# Key -> the type check it must pass. Every rule below reads these keys, and
# a rule whose value has the wrong type might silently not fire, so a
# malformed definition is denied as such.
shape := {
	"name": "a non-empty string",
	"description": "a string",
	"parameters": "an object",
	"source": "a string",
	"base": "a non-empty string",
	"network": "a boolean",
	"sha256": "64 lower-case hex digits",
	"source_bytes": "a non-negative integer",
}

well_typed("name", value) if non_empty_string(value)

well_typed("description", value) if is_string(value)

well_typed("parameters", value) if is_object(value)

well_typed("source", value) if is_string(value)

well_typed("base", value) if non_empty_string(value)

well_typed("network", value) if is_boolean(value)

well_typed("sha256", value) if {
	is_string(value)
	regex.match(`^[0-9a-f]{64}$`, value)
}

well_typed("source_bytes", value) if {
	is_number(value)
	value >= 0
	value == floor(value)
}

# A rule, not `not is_object(definition)`: a call with an undefined argument
# makes the whole expression undefined rather than false, even under `not`.
object_definition if is_object(definition)

non_empty_string(value) if {
	is_string(value)
	value != ""
}

bad_keys contains key if {
	expected
	not object_definition
	some key, _ in shape
}

bad_keys contains key if {
	object_definition
	some key, _ in shape
	not well_typed(key, object.get(definition, key, null))
}

# --- Admission checks (define and every call) --------------------------------

deny contains reason("definition_malformed", msg) if {
	count(bad_keys) > 0
	msg := sprintf("tool definition is malformed: %s", [concat(", ", [sprintf("%s must be %s", [key, shape[key]]) |
		some key in sort(bad_keys)
	])])
}

deny contains reason("definition_malformed", msg) if {
	tools.dynamic
	definition.name != tools.name
	msg := sprintf("tool definition names tool %q, but the call is for %q", [definition.name, tools.name])
}

deny contains reason("tool_definitions_not_enabled", msg) if {
	expected
	not tools.profile
	msg := sprintf(
		"principal %q has unknown profile %q, which enables no dynamic tools",
		[tools.principal_id, tools.profile_name],
	)
}

deny contains reason("tool_definitions_not_enabled", msg) if {
	expected
	tools.profile
	not enabled
	msg := sprintf("profile %q does not enable dynamic tools (no tool_definitions)", [tools.profile_name])
}

# One message whether the base is unregistered or merely ungranted.
deny contains reason("base_not_granted", msg) if {
	expected
	not base_entry
	msg := sprintf("base tool %q is not available to principal %q", [base_name, tools.principal_id])
}

deny contains reason("base_not_dynamic", msg) if {
	base_entry
	not "dynamic" in object.keys(base_entry)
	msg := sprintf("base tool %q cannot run dynamic tools", [definition.base])
}

deny contains reason("base_not_allowed", msg) if {
	expected
	enabled
	not definition.base in object.get(settings, "bases", [])
	msg := sprintf("profile %q does not allow dynamic tools on base %q", [tools.profile_name, base_name])
}

# The larger of the size the gateway measured and the policy's own count, so
# a wrong source_bytes can never let a larger program through.
deny contains reason("source_too_large", msg) if {
	expected
	enabled
	size := max({object.get(definition, "source_bytes", 0), utf8_bytes(definition.source)})
	size > limit("max_source_bytes")
	msg := sprintf("source of tool %q has %v bytes, at most %v", [definition.name, size, limit("max_source_bytes")])
}

# Network only where the base itself could have it (airlock.network's notion
# of a tool needing network) and the profile permits network at all.
deny contains reason("network_not_permitted", msg) if {
	base_entry
	definition.network == true
	not network_possible
	msg := sprintf(
		"tool %q asks for network, which base %q and profile %q do not both permit",
		[definition.name, definition.base, tools.profile_name],
	)
}

# A tripwire, not the boundary: a tool without network runs in a sandbox
# without network whatever its source says (airlock.network gives it none).
# These catch the plain ways to reach for the network, so that a definition
# that would only fail at run time is refused when it is defined, and an
# agent's attempt shows in the audit log. Obfuscated code (exec, getattr on
# builtins, ctypes) passes them by design.
deny contains reason("source_imports_network", msg) if {
	expected
	not definition.network == true
	modules := network_imports(definition.source)
	count(modules) > 0
	msg := sprintf(
		"source of tool %q imports %s without network: true",
		[definition.name, concat(", ", sort(modules))],
	)
}

deny contains reason("source_dynamic_import", msg) if {
	expected
	not definition.network == true
	regex.match(`__import__\s*\(|\bimportlib\b`, definition.source)
	msg := sprintf(
		"source of tool %q imports modules dynamically (__import__ or importlib) without network: true",
		[definition.name],
	)
}

network_possible if {
	network.needs_network(base_entry)
	network.permitted
}

network_modules := `socket|ssl|http|urllib|requests|httpx|aiohttp|ftplib|smtplib|telnetlib`

# `import a, socket as s` and `from http.client import X`, at a line start or
# after a `;`. The last match of a line is named; one is enough to deny.
import_patterns := [
	concat("", [`(?m)(?:^|;)[ \t]*import[ \t]+[^\n;#]*\b(`, network_modules, `)\b`]),
	concat("", [`(?m)(?:^|;)[ \t]*from[ \t]+(`, network_modules, `)\b`]),
]

network_imports(source) := {match[1] |
	some pattern in import_patterns
	some match in regex.find_all_string_submatch_n(pattern, source, -1)
}

# count() counts characters, not bytes; hex doubles each byte.
utf8_bytes(text) := count(hex.encode(text)) / 2

# --- Define-only checks --------------------------------------------------------

define_deny contains reason("unsupported_op", msg) if {
	not define_request
	msg := sprintf("op %q is not supported; expected \"define\" without a tool_definition", [op])
}

define_deny contains reason("tool_definitions_not_granted", msg) if {
	define_request
	not "define_tool" in tools.granted
	msg := sprintf("tool \"define_tool\" is not available to principal %q", [tools.principal_id])
}

define_deny contains reason("too_many_definitions", msg) if {
	define_request
	enabled
	owned := input.owner_definitions
	is_number(owned)
	owned >= limit("max_definitions")
	msg := sprintf(
		"principal %q owns %v tool definitions, at most %v",
		[tools.principal_id, owned, limit("max_definitions")],
	)
}

# Without a count the limit cannot be checked: deny rather than skip it.
define_deny contains reason("too_many_definitions", msg) if {
	define_request
	enabled
	not is_number(object.get(input, "owner_definitions", null))
	msg := "the number of tool definitions the principal owns is missing (owner_definitions)"
}

reason(code, message) := {"code": code, "message": message, "package": "airlock.tool_definitions"}
