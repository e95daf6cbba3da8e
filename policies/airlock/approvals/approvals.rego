# Approval rules: which granted calls need a human's approval before they
# run. A reason here is an *ask*, not a deny: airlock.decision answers
# `ask: true` with these reasons when nothing denies the call (deny beats
# ask, ask beats allow), and the gateway holds the call until an approver
# says yes (docs/approvals.md). The rules are data
# (policies/airlock/approvals/data.yaml, data.airlock.approvals): which
# profiles they apply to, and the shell command patterns that need approval,
# read against the same command line as airlock.arguments' deny patterns and
# against that line with its quoting removed.
#
# Best effort, like the deny patterns: a tripwire, not the boundary. A shell
# can spell a command in endless ways (variables, eval, a script file, an
# interpreter), so a determined agent can run a listed command without a
# pattern matching. What bounds a call is its grants, its network and its
# sandbox (policies/README.md, "Asking for approval").
package airlock.approvals

import data.airlock.arguments
import data.airlock.tools

# Only a granted tool with shell rules has a command line (arguments.line
# needs tools.entry), so an ungranted tool asks nothing, as it denies nothing
# beyond tool_not_granted.
ask contains reason(
	"approval_required",
	sprintf("command of tool %q needs approval: %s (rule %s)", [tools.name, rule_reason(rule), rule_id(rule)]),
) if {
	applies
	some i, matched in pattern_results
	matched == true
	rule := shell_patterns[i]
}

# A command line that names a listed program and also expands something
# ($x, ${x}, $(...), backticks, eval, xargs) asks too: the patterns cannot
# read through the expansion (`x=push; git $x`).
ask contains reason(
	"approval_required",
	sprintf(
		"command of tool %q needs approval: names %s with a shell expansion no pattern reads (rule expansion)",
		[tools.name, program],
	),
) if {
	applies
	regex.match(`\$|\x60|\beval\b|\bxargs\b`, arguments.line)
	some program in expansion_programs
	regex.match(sprintf(`\b%s\b`, [program]), normalized)
}

# An invalid pattern would read as "no match" and silently stop asking: deny
# the call instead, as an invalid deny pattern does.
deny contains {
	"code": "argument_denied",
	"message": sprintf(
		"approval pattern %s for tool %q is not a valid regular expression; refusing rather than skipping it",
		[rule_id(rule), tools.name],
	),
	"package": "airlock.approvals",
} if {
	applies
	some i, rule in shell_patterns
	not i in object.keys(pattern_results)
}

reason(code, message) := {"code": code, "message": message, "package": "airlock.approvals"}

default asking_profiles := []

asking_profiles := data.airlock.approvals.profiles

default shell_patterns := []

shell_patterns := data.airlock.approvals.shell.patterns

default expansion_programs := []

expansion_programs := data.airlock.approvals.shell.programs

applies if {
	tools.profile_name in asking_profiles
	is_string(arguments.line)
}

# The command line without quotes and backslashes, and with the punctuation
# of a word list made spaces: `"git" push`, `g\it push`, `gi''t push` and
# subprocess.run(["git", "push"]) all read `git push` here.
normalized := regex.replace(regex.replace(arguments.line, `["'\\]`, ""), `[\[\](),]`, " ")

# Pattern index -> whether it matched the line or the normalized line; no
# entry for a pattern that does not compile.
pattern_results[i] := matches(rule.pattern) if {
	applies
	some i, rule in shell_patterns
	regex.is_valid(rule.pattern)
}

default matches(_) := false

matches(pattern) if {
	some subject in [arguments.line, normalized]
	regex.match(pattern, subject)
}

rule_id(rule) := object.get(rule, "id", "(unnamed)")

rule_reason(rule) := object.get(rule, "reason", "matches an approval pattern")
