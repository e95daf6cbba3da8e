package airlock.approvals_test

import data.airlock
import data.airlock.approvals

caps := {
	"memory_bytes": 536870912, "cpu_millis": 1000, "pids": 128,
	"timeout_ms": 30000, "output_bytes": 1048576, "tmpfs_bytes": 67108864,
}

grants := {
	"profiles": {
		"default": {"tools": ["shell", "local_shell"], "network": false, "limits": caps},
		"trusted": {"tools": ["shell"], "network": false, "limits": caps},
	},
	"principals": {},
}

registry := {
	"shell": {"name": "shell", "item_type": "shell_call", "allowed_network": false, "egress_allowlist": [], "limits": {}},
	"local_shell": {
		"name": "local_shell", "item_type": "local_shell_call",
		"allowed_network": false, "egress_allowlist": [], "limits": {},
	},
}

call(profile, tool, item_type, args) := {
	"principal": {"id": "dev-agent", "profile": profile, "authn": "token"},
	"call": {
		"call_id": "call_1", "item_type": item_type, "tool": tool, "arguments": args,
		"arguments_errors": [], "arguments_bytes": 2, "session_id": "",
	},
	"request": {"rpc": "Invoke", "decision_id": "d-1", "time": "2026-12-07T03:00:00Z"},
}

shell(command) := call("default", "shell", "shell_call", {"command": command})

codes(reasons) := [r.code | some r in reasons]

test_shipped_patterns_ask if {
	cases := [
		{"cmd": "git push origin main", "rule": "git_push"},
		{"cmd": "cd repo && git -C sub push --force", "rule": "git_push"},
		{"cmd": "rm -r build", "rule": "rm_recursive"},
		{"cmd": "rm -fR ./tmp", "rule": "rm_recursive"},
		{"cmd": "rm --recursive x", "rule": "rm_recursive"},
	]
	every c in cases {
		d := airlock.decision with input as shell(c.cmd)
			with airlock.grants as grants
			with data.registry.tools as registry
		not d.allow
		d.ask
		codes(d.reasons) == ["approval_required"]
		endswith(d.reasons[0].message, sprintf("(rule %s)", [c.rule]))
		d.reasons[0].package == "airlock.approvals"

		# What the call runs with once approved.
		d.tool == registry.shell
		d.obligations.limits.timeout_ms == 30000
	}
}

test_ordinary_commands_do_not_ask if {
	every cmd in ["git status", "git log --oneline", "rm file.txt", "ls -R", "echo push"] {
		d := airlock.decision with input as shell(cmd)
			with airlock.grants as grants
			with data.registry.tools as registry
		d.allow
		not d.ask
		d.shadow_asks == []
	}
}

test_argv_asks_too if {
	argv := {"type": "exec", "command": ["git", "push"], "env": {}}
	d := airlock.decision with input as call("default", "local_shell", "local_shell_call", argv)
		with airlock.grants as grants
		with data.registry.tools as registry
	d.ask
	codes(d.reasons) == ["approval_required"]
}

test_deny_beats_ask if {
	d := airlock.decision with input as shell("git push && cat /etc/shadow")
		with airlock.grants as grants
		with data.registry.tools as registry
	not d.allow
	not d.ask
	codes(d.reasons) == ["argument_denied"]
	d.tool == null
}

test_other_profiles_are_not_asked if {
	d := airlock.decision with input as call("trusted", "shell", "shell_call", {"command": "git push"})
		with airlock.grants as grants
		with data.registry.tools as registry
	d.allow
	not d.ask
}

test_ungranted_tool_is_denied_not_asked if {
	d := airlock.decision with input as call("default", "python", "function_call", {"command": "git push"})
		with airlock.grants as grants
		with data.registry.tools as registry
	not d.ask
	codes(d.reasons) == ["tool_not_granted"]
}

test_shadowed_ask_runs_and_reports if {
	cases := [{"all": true}, {"packages": ["airlock.approvals"]}, {"codes": ["approval_required"]}]
	every shadow in cases {
		d := airlock.decision with input as shell("git push")
			with airlock.grants as grants
			with data.registry.tools as registry with airlock.config.shadow as shadow
		d.allow
		not d.ask
		codes(d.reasons) == ["allowed"]
		codes(d.shadow_asks) == ["approval_required"]
		d.shadow == []
	}
}

test_invalid_pattern_denies if {
	patterns := [{"id": "broken", "pattern": "("}]
	d := airlock.decision with input as shell("ls")
		with airlock.grants as grants
		with data.registry.tools as registry with approvals.shell_patterns as patterns
	not d.allow
	not d.ask
	codes(d.reasons) == ["argument_denied"]
	contains(d.reasons[0].message, "approval pattern broken")
}

test_rules_default_when_data_is_missing if {
	r := approvals.rule_reason({})
	r == "matches an approval pattern"
	approvals.rule_id({}) == "(unnamed)"
	d := airlock.decision with input as shell("git push")
		with airlock.grants as grants
		with data.registry.tools as registry with approvals.asking_profiles as []
	d.allow
}

# policies/README.md, "Asking for approval".
test_worked_example_kubectl_delete if {
	patterns := array.concat(approvals.shell_patterns, [{
		"id": "kubectl_delete", "pattern": `\bkubectl\s+(\S+\s+)*delete\b`,
		"reason": "deletes cluster resources",
	}])
	d := airlock.decision with input as shell("kubectl -n prod delete pod web-1")
		with airlock.grants as grants
		with data.registry.tools as registry
		with approvals.shell_patterns as patterns
	d.ask
	d.reasons[0].message == `command of tool "shell" needs approval: deletes cluster resources (rule kubectl_delete)`
}

# Quoting and escapes do not hide a listed command from the patterns, and a
# line that names a listed program through an expansion asks too. Best
# effort (a tripwire): see the package comment.
test_quoting_and_expansion_still_ask if {
	cases := [
		{"cmd": `"git" push origin main`, "rule": "git_push"},
		{"cmd": `git "push" origin main`, "rule": "git_push"},
		{"cmd": `g\it push origin main`, "rule": "git_push"},
		{"cmd": `git pu\sh origin main`, "rule": "git_push"},
		{"cmd": `gi''t push origin main`, "rule": "git_push"},
		{"cmd": `git -c core.x=1 push origin main`, "rule": "git_push"},
		{"cmd": `python3 -c 'import subprocess; subprocess.run(["git", "push"])'`, "rule": "git_push"},
		{"cmd": `"rm" -rf /work/data`, "rule": "rm_recursive"},
		{"cmd": `rm "-rf" /work/data`, "rule": "rm_recursive"},
		{"cmd": `x=push; git $x origin main`, "rule": "expansion"},
		{"cmd": "cmd=rm; $cmd -rf /work/data", "rule": "expansion"},
		{"cmd": "eval 'git pu''sh'", "rule": "git_push"},
		{"cmd": "git `echo push`", "rule": "expansion"},
	]
	every c in cases {
		d := airlock.decision with input as shell(c.cmd)
			with airlock.grants as grants
			with data.registry.tools as registry
		d.ask
		some r in d.reasons
		endswith(r.message, sprintf("(rule %s)", [c.rule]))
	}
}

test_expansion_without_a_listed_program_does_not_ask if {
	every cmd in [`echo "$HOME"`, "ls $(pwd)", "git status"] {
		d := airlock.decision with input as shell(cmd)
			with airlock.grants as grants
			with data.registry.tools as registry
		d.allow
		not d.ask
	}
}
