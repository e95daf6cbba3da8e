# Argument rules: looks inside the arguments of a granted tool call. Shell
# commands (a command line, or an argv list for the legacy local_shell) are
# matched against deny patterns and an optional program allow-list; file paths
# must be short enough to check, stay inside the work dir and must not name a
# .git directory, a file that tools on the operator's machine run by
# themselves (.envrc, .vscode/tasks.json, ...) or anything in a dot-directory
# that is not explicitly open. The rules themselves are data
# (policies/airlock/arguments/data.yaml, data.airlock.arguments), so adding a
# pattern, a protected file or a tool needs no Rego. The JSON-Schema check of
# the same arguments happens earlier, in the gateway (arguments_invalid).
package airlock.arguments

import data.airlock.tools

# Every deny below needs tools.entry (through shell_rule or path_arguments), so
# an ungranted tool yields nothing here and stays indistinguishable from an
# unknown one.
#
# Rules are keyed by tools.registry_name and read tools.arguments: for a call of
# a dynamic tool that is its base, with the definition's source as the base's
# dynamic.source argument: the body the base runs (the gateway wraps it with
# the call's arguments as a string literal, data the body may act on: a body
# like exec(ARGS["code"]) runs what the arguments say, so argument rules are
# no boundary for dynamic tools; the sandbox is). So a shell-like
# base would still have its deny patterns matched against the generated
# program, while the dynamic tool's own arguments ({"path": ...} for a CSV
# summarizer) are never misread as the base's (python's `code`); they are only
# data for the program, checked against the definition's schema in the gateway.

deny contains reason(
	"argument_denied",
	sprintf("argument %q of tool %q must be a string to be checked", [shell_argument, tools.name]),
) if {
	command != null
	not argv_form
	not is_string(command)
}

deny contains reason(
	"argument_denied",
	sprintf("argument %q of tool %q must be a list of strings to be checked", [shell_argument, tools.name]),
) if {
	command != null
	argv_form
	not is_argv(command)
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
	is_string(line)
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
	regex.match(`\$\(|\x60|<\(|>\(`, line) # $( ` <( >(
}

deny contains reason(
	"path_outside_workdir",
	sprintf("argument %q of tool %q must be a path string", [name, tools.name]),
) if {
	some name in path_arguments
	path := object.get(tools.arguments, name, null)
	path != null
	not is_string(path)
}

# The message states the sizes, never the path: it may be 64 KiB.
deny contains reason(
	"path_too_long",
	sprintf(
		"argument %q of tool %q is too long to check (%d bytes, %d segments; at most %d and %d)",
		[name, tools.name, utf8_bytes(path), segment_count(path), max_path_bytes, max_path_segments],
	),
) if {
	some name, path in string_paths
	path_too_long(path)
}

deny contains reason(
	"path_outside_workdir",
	sprintf("argument %q of tool %q is %q, which is outside %s", [name, tools.name, path, workdir]),
) if {
	some name, path in bounded_paths
	outside_workdir(path)
}

deny contains reason(
	"path_protected",
	sprintf("argument %q of tool %q is %q, which is protected: %s", [name, tools.name, path, why]),
) if {
	some name, path in bounded_paths
	some why in protected(path)
}

# A protected entry that cannot be matched (a glob character other than `*`,
# an upper-case letter, an empty or dot-only segment) would silently protect
# nothing: deny instead, as for an invalid deny pattern.
deny contains reason(
	"path_protected",
	sprintf(
		"protected path entry %q for tool %q is not a valid pattern; refusing rather than skipping it",
		[entry, tools.name],
	),
) if {
	count(path_arguments) > 0
	not all_protected_entries_valid
	some entry, _ in protected_files
	not valid_protected_entry(entry)
}

reason(code, message) := {"code": code, "message": message, "package": "airlock.arguments"}

# --- Shell rules -------------------------------------------------------------

# Each lookup reads only the part of the data it needs (data is read on every
# call), and a missing section means "no rules", not an error.
default shell_tools := {}

shell_tools := data.airlock.arguments.shell.tools

default deny_patterns := []

deny_patterns := data.airlock.arguments.shell.deny_patterns

shell_defaults := {"argument": "command", "programs": [], "argv": false}

# The granted tool's shell settings with the defaults filled in; undefined
# when the tool has no shell rules. A tool listed with no settings at all
# (`shell:` alone is null in YAML) gets the defaults rather than no checks.
shell_rule := object.union(shell_defaults, shell_tools[tools.registry_name]) if {
	tools.entry
	is_object(shell_tools[tools.registry_name])
} else := shell_defaults if {
	tools.entry
	tools.registry_name in object.keys(shell_tools)
}

shell_argument := shell_rule.argument

# The command, when the granted tool has shell rules and the argument is present.
# A missing argument is left to the JSON-Schema check (arguments_invalid).
command := object.get(tools.arguments, shell_argument, null)

# `argv: true`: the argument is an argv list run without a shell (the legacy
# local_shell action's `command`), not a command line.
argv_form if shell_rule.argv == true

is_argv(value) if {
	is_array(value)
	every element in value {
		is_string(element)
	}
}

# The command line the patterns and the program checks read. An argv is
# joined with spaces, so a pattern spanning arguments (["rm", "-rf", "/"])
# matches as it would on a shell line; quoting is lost, which can only make
# more patterns match, never fewer.
line := command if {
	not argv_form
	is_string(command)
}

line := concat(" ", command) if {
	argv_form
	is_argv(command)
}

# What each deny pattern is matched against for an argv: the joined line and
# every element on its own too, so a pattern anchored with ^ or $ still sees
# the script of ["sh", "-c", "..."] as the command line it is.
argv_subjects := array.concat([line], command) if {
	argv_form
	is_argv(command)
}

# Pattern index -> whether it matched; no entry for a pattern that does not
# compile (regex.match is then undefined). One regex.match per pattern (and
# argv element) serves both the match and the validity check (regex.is_valid
# would compile every pattern again per call).
pattern_results[i] := regex.match(rule.pattern, line) if {
	not argv_form
	is_string(line)
	some i, rule in deny_patterns
}

# For an argv: whether it matched any subject; undefined for every subject
# when it does not compile, and there is always at least the line.
pattern_results[i] := true in results if {
	argv_form
	is_string(line)
	some i, rule in deny_patterns
	results := [matched | some subject in argv_subjects; matched := regex.match(rule.pattern, subject)]
	count(results) > 0
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
	some segment in regex.split(separators, line)
	[program] := regex.find_n(`\S+`, segment, 1)
}

# An argv runs argv[0] exactly (no shell splits it into words): ["ls x"] is
# not ls. The words of the joined line are checked too, which only refuses more.
programs contains command[0] if {
	argv_form
	is_argv(command)
	count(command) > 0
}

# --- File rules --------------------------------------------------------------

default file_tools := {}

file_tools := data.airlock.arguments.files.tools

default workdir_setting := "/work"

workdir_setting := data.airlock.arguments.files.workdir

workdir := normalize(workdir_setting)

path_arguments contains name if {
	tools.entry
	some name in object.get(file_tools, tools.registry_name, [])
}

# Argument name -> path, for the path arguments that are strings.
string_paths[name] := path if {
	some name in path_arguments
	path := tools.arguments[name]
	is_string(path)
}

# The string paths within the bounds below: the only ones the matching
# (outside_workdir, protected) ever sees. Globs and regexes over a path cost
# more than linear time in its length and segment count: a 56 KB path of
# "x.code-workspac/" took OPA ~40 ms, one of "a./" ~115 ms, and a flood of
# them pushed other principals' decisions past the gateway's 250 ms timeout.
# A too-long path is refused (path_too_long) and never matched.
bounded_paths[name] := path if {
	some name, path in string_paths
	not path_too_long(path)
}

# Linux's PATH_MAX is 4096 bytes and no real path has 256 levels; the agent
# (airlock/agent/_workspace.py MAX_PATH_BYTES, MAX_PATH_SEGMENTS) refuses
# the same paths. Not data: the bound is what keeps every other rule cheap.
max_path_bytes := 4096

max_path_segments := 256

path_too_long(path) if utf8_bytes(path) > max_path_bytes

path_too_long(path) if segment_count(path) > max_path_segments

# count() counts characters, not bytes; hex doubles each byte. Linear, and a
# path is at most the gateway's arguments cap (64 KiB).
utf8_bytes(path) := count(hex.encode(path)) / 2

# Segments as written: `\` separates too (see folded_path), and empty or "."
# segments count, so no spelling gets more depth past the bound.
segment_count(path) := (strings.count(path, "/") + strings.count(path, `\`)) + 1

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

# --- Protected paths ---------------------------------------------------------

# Files and directories that something on the operator's machine runs or obeys
# by itself (git, direnv, editors, coding agents, hook managers, package
# managers, CI on push): writing one turns a file edit into code execution on
# the host, outside any sandbox. .git is built in (git runs core.fsmonitor,
# hooks, ... from it); the rest is data: entry -> why it is protected.
default protected_files := {}

protected_files := data.airlock.arguments.files.protected

# Dot-directories that hold nothing any tool runs by itself (.github's
# templates; its workflows are a protected entry). Every other one is closed.
default allowed_dot_directories := []

allowed_dot_directories := data.airlock.arguments.files.allowed_dot_directories

# Why a path is protected; empty when it is not. Matched on the folded path
# (see folded_path) at any depth, since the tools that run these files also
# look in subdirectories (direnv, nested npm packages, VS Code folders). A
# path inside a dot-directory that is not allowed gets the generic reason,
# only when nothing more specific (.git, an entry) names it.
protected(path) := specific | dot_directory_reasons(joined, specific) if {
	joined := folded_path(path)
	git_reasons := {git_reason | regex.match(`/(\.git|git~[0-9]+)/`, joined)}
	entry_reasons := {why |
		not no_entry_matches(joined)
		some entry, text in protected_files
		glob.match(concat("", ["**/", entry, "/**"]), ["/"], joined)
		why := sprintf("matches %q: %s", [entry, text])
	}
	specific := git_reasons | entry_reasons
}

git_reason := "a .git directory holds configuration and hooks that git runs (core.fsmonitor, hooks/*)"

dot_directory_reasons(joined, specific) := {dot_directory_reason |
	count(specific) == 0
	in_closed_dot_directory(joined)
}

dot_directory_reason := "it is in a dot-directory, where tools keep configuration and programs they run by themselves"

# A folded segment that starts with a dot and is not the last one (a file
# named .x is not a directory; dot-files are entries). The regex skips the
# segment walk for the usual path, which has no dot-directory at all.
in_closed_dot_directory(joined) if {
	regex.match(`/\.[^/]+/[^/]`, joined)
	segments := split(trim(joined, "/"), "/")
	some segment in array.slice(segments, 0, count(segments) - 1)
	startswith(segment, ".")
	not segment in allowed_dot_directories
}

# One glob match for the usual, unprotected path instead of one per entry.
# Only a definite "no" skips the entries: if the combined glob does not
# compile (an invalid entry, which is denied anyway), each entry is tried.
no_entry_matches(joined) if glob.match(any_protected_entry, ["/"], joined) == false

# Every entry in one glob ({a,b} is an alternation; valid entries hold no
# comma or brace), compiled once and cached by OPA like any glob pattern.
any_protected_entry := concat("", ["**/{", concat(",", protected_names), "}/**"])

protected_names := object.keys(protected_files)

# An entry is /-separated segments written as they are matched: lower-case
# ASCII letters, digits, `.`, `_`, `~`, `-`, and `*` for any run of
# characters within one segment (never `**`, which would cross segments); a
# segment is not empty and does not end in a dot ("." and ".." are no names).
# So the agent's copy of the matcher (airlock/agent/_workspace.py) agrees with this
# one, and folding a path can never make it miss an entry.
valid_protected_entry(entry) if {
	is_string(entry)
	not regex.match(`[^a-z0-9._~*/-]|\*\*|//|^/|/$|\.(/|$)|^$`, entry)
}

# The same check on all entries at once (the usual case); only when it fails
# is each entry checked, to name the bad one. It runs on every call of a file
# tool, so it is one character-class regex and substring tests on the entries
# framed by newlines (an entry starts after a "\n" and ends before one): the
# one alternation regex it replaces cost ~0.2 ms per call on 70 entries.
all_protected_entries_valid if {
	framed := concat("", ["\n", concat("\n", protected_names), "\n"])
	not regex.match(`[^a-z0-9._~*/\n-]`, framed)
	every bad in invalid_entry_parts {
		not contains(framed, bad)
	}
}

# `**`, an empty segment, a leading or trailing `/`, a segment ending in a
# dot, an empty entry.
invalid_entry_parts := ["**", "//", "\n/", "/\n", "./", ".\n", "\n\n"]

# Characters that HFS+/APFS ignore in names and that render as nothing
# (zero-width, joiners, direction marks and overrides, BOM, soft hyphen):
# ".g\u200cit" is .git there. Git strips the same set before its own .git check.
ignorable := `[\x{00AD}\x{200B}-\x{200F}\x{202A}-\x{202E}\x{2060}-\x{206F}\x{FEFF}]`

# Letters that case-insensitive filesystems fold onto ASCII letters of the
# protected names (NTFS upcases the dotless i and the long s; APFS folds the
# sharp s and the ligatures; the Kelvin sign decomposes to K), mapped before
# lower(), which handles only some of them.
case_folds := {
	"\u0130": "i", "\u0131": "i", "\u017f": "s", "\u212a": "k",
	"\u00df": "ss", "\u1e9e": "ss",
	"\ufb00": "ff", "\ufb01": "fi", "\ufb02": "fl", "\ufb03": "ffi", "\ufb04": "ffl", "\ufb05": "st", "\ufb06": "st",
}

# A path as Windows, macOS or a case-insensitive filesystem may read it, as
# "/seg/seg/", so that no spelling of a protected name slips past: `\` is a
# separator too, an NTFS stream suffix (".git::$INDEX_ALLOCATION") is dropped,
# ignorable characters are removed, trailing dots and spaces of a segment
# (which Windows strips) are trimmed, and case is folded. Empty and "."
# segments disappear, and ".." does too (outside_workdir refuses it on its
# own). .git then appears as "/.git/", and GIT~1, the 8.3 short name NTFS
# gives it, as "/git~1/" (git's own is_ntfs_dotgit). A handful of regexes on
# the whole path: a per-segment comprehension costs several times more.
folded_path(path) := regex.replace(trimmed, `/+`, "/") if {
	not plain_path(path)
	streamless := regex.replace(folded(path), `:[^/]*`, "")
	trimmed := regex.replace(concat("", ["/", streamless, "/"]), `[. ]+/`, "/")
}

# The usual path ("src/app.py", "/work/a/b.txt") has nothing to fold but case:
# one regex match decides, instead of four regex replacements.
folded_path(path) := concat("", ["/", trim_left(lower(path), "/"), "/"]) if plain_path(path)

plain_path(path) if not regex.match(`[\\:]|[^\x00-\x7f]|[. ](/|$)|//|/$|^$`, path)

# The character-wise part: a plain ASCII path (the usual case) needs only lower().
folded(path) := lower(replace(path, `\`, "/")) if regex.match(`^[\x00-\x7f]*$`, path)

folded(path) := lower(strings.replace_n(case_folds, regex.replace(replace(path, `\`, "/"), ignorable, ""))) if {
	not regex.match(`^[\x00-\x7f]*$`, path)
}
