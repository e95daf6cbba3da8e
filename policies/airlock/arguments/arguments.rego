# Argument rules: looks inside the arguments of a granted tool call. Shell
# commands are matched against deny patterns and an optional program
# allow-list; file paths must stay inside the work dir. The rules themselves
# are data (policies/airlock/arguments/data.yaml, data.airlock.arguments), so
# adding a pattern or a tool needs no Rego. The JSON-Schema check of the same
# arguments happens earlier, in the gateway (arguments_invalid).
package airlock.arguments

import data.airlock.tools

# Every deny below needs tools.entry (through shell_rule or path_arguments), so
# an ungranted tool yields nothing here and stays indistinguishable from an
# unknown one.

deny contains reason(
	"argument_denied",
	sprintf("argument %q of tool %q must be a string to be checked", [shell_argument, tools.name]),
) if {
	command != null
	not is_string(command)
}

deny contains reason(
	"argument_denied",
	sprintf("argument %q of tool %q denied: %s (rule %s)", [shell_argument, tools.name, rule_reason(rule), rule_id(rule)]),
) if {
	some i, matched in pattern_results
	matched == true
	rule := deny_patterns[i]
}

# An invalid pattern makes regex.match undefined, which would read as "no
# match": a typo in the data would silently switch the rule off. Deny instead.
deny contains reason(
	"argument_denied",
	sprintf(
		"deny pattern %s for tool %q is not a valid regular expression; refusing rather than skipping it",
		[rule_id(rule), tools.name],
	),
) if {
	is_string(command)
	some i, rule in deny_patterns
	not i in object.keys(pattern_results)
}

deny contains reason(
	"program_not_allowed",
	sprintf("program %q is not allowed for tool %q", [program, tools.name]),
) if {
	program_checks
	some program in programs
	not program in allowed_programs
}

deny contains reason(
	"program_not_allowed",
	sprintf("command substitution is not allowed for tool %q: it hides programs from the allow-list", [tools.name]),
) if {
	program_checks
	is_string(command)
	regex.match(`\$\(|\x60|<\(|>\(`, command) # $( ` <( >(
}

deny contains reason(
	"path_outside_workdir",
	sprintf("argument %q of tool %q must be a path string", [name, tools.name]),
) if {
	some name in path_arguments
	path := object.get(input, ["call", "arguments", name], null)
	path != null
	not is_string(path)
}

deny contains reason(
	"path_outside_workdir",
	sprintf("argument %q of tool %q is %q, which is outside %s", [name, tools.name, path, workdir]),
) if {
	some name in path_arguments
	path := input.call.arguments[name]
	is_string(path)
	outside_workdir(path)
}

reason(code, message) := {"code": code, "message": message, "package": "airlock.arguments"}

# --- Shell rules -------------------------------------------------------------

# Each lookup reads only the part of the data it needs (data is read on every
# call), and a missing section means "no rules", not an error.
default shell_tools := {}

shell_tools := data.airlock.arguments.shell.tools

default deny_patterns := []

deny_patterns := data.airlock.arguments.shell.deny_patterns

shell_defaults := {"argument": "command", "programs": []}

# The granted tool's shell settings with the defaults filled in; undefined
# when the tool has no shell rules. A tool listed with no settings at all
# (`shell:` alone is null in YAML) gets the defaults rather than no checks.
shell_rule := object.union(shell_defaults, shell_tools[tools.name]) if {
	tools.entry
	is_object(shell_tools[tools.name])
} else := shell_defaults if {
	tools.entry
	tools.name in object.keys(shell_tools)
}

shell_argument := shell_rule.argument

# The command, when the granted tool has shell rules and the argument is present.
# A missing argument is left to the JSON-Schema check (arguments_invalid).
command := object.get(input, ["call", "arguments", shell_argument], null)

# Pattern index -> whether it matched the command; no entry for a pattern that
# does not compile. One regex.match per pattern serves both the match and the
# validity check (regex.is_valid would compile every pattern again per call).
pattern_results[i] := regex.match(rule.pattern, command) if {
	is_string(command)
	some i, rule in deny_patterns
}

# A rule missing its id or reason must still deny, so the message falls back.
rule_id(rule) := object.get(rule, "id", "(unnamed)")

rule_reason(rule) := object.get(rule, "reason", "matches a deny pattern")

allowed_programs := shell_rule.programs

# A program allow-list is only active when it lists something.
program_checks if count(allowed_programs) > 0

# `&&` and `||` first, so they are not read as two `&` or `|` separators
# around an empty command.
separators := `&&|\|\||[;|&\n]`

# The first word of every command in the line.
programs contains program if {
	is_string(command)
	some segment in regex.split(separators, command)
	[program] := regex.find_n(`\S+`, segment, 1)
}

# --- File rules --------------------------------------------------------------

default file_tools := {}

file_tools := data.airlock.arguments.files.tools

default workdir_setting := "/work"

workdir_setting := data.airlock.arguments.files.workdir

workdir := normalize(workdir_setting)

path_arguments contains name if {
	tools.entry
	some name in object.get(file_tools, tools.name, [])
}

# `..` is refused anywhere, even where it would stay inside (a/../b): the
# policy cannot see symlinks, so it does not try to resolve them.
outside_workdir(path) if ".." in split(path, "/")

outside_workdir(path) if {
	startswith(path, "/")
	not inside(normalize(path), workdir)
}

# "/work" and "/work/a" are inside /work, "/workshop" is not; everything is
# inside "/".
inside(path, dir) if startswith(concat("", [path, "/"]), concat("", [trim_right(dir, "/"), "/"]))

# Absolute form with empty and "." segments dropped: "//work/./a/" -> "/work/a".
normalize(path) := concat("/", ["", concat("/", [s |
	some s in split(path, "/")
	not s in {"", "."}
])])
