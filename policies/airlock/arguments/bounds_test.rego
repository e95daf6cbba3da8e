# Tests of the path bounds (path_too_long): a path too long or too deep to
# match cheaply is refused on its own and never reaches the matching
# (fixtures and helpers: arguments_test.rego, same package).
package airlock.arguments_test

import data.airlock.arguments

# `s` repeated n times (OPA has no string repeat).
repeat(s, n) := concat("", [s | some _ in numbers.range(1, n)])

# n segments "a".
segments(n) := [s | some _ in numbers.range(1, n); s := "a"]

too_long(name, tool, bytes, depth) := [
	"path_too_long",
	sprintf(
		"argument %q of tool %q is too long to check (%d bytes, %d segments; at most 4096 and 256)",
		[name, tool, bytes, depth],
	),
]

# The attack's two paths: 56 KB of "x.code-workspac/" (each segment almost
# matches the *.code-workspace entry, so the combined glob backtracks) and
# 60 KB of "a./" (20000 segments, each trimmed by the folding regexes).
attack_paths := [repeat("x.code-workspac/", 3500), repeat("a./", 20000)]

test_attack_paths_are_refused_as_too_long_and_nothing_else if {
	denials == [too_long("path", "apply_patch", 56000, 3501)] with input as patch(attack_paths[0])
		with data.airlock.grants as grants
		with data.registry.tools as registry
	denials == [too_long("path", "apply_patch", 60000, 20001)] with input as patch(attack_paths[1])
		with data.airlock.grants as grants
		with data.registry.tools as registry
}

test_bounds_are_inclusive_and_count_bytes_and_both_separators if {
	# 16 segments of 255 bytes joined by "/" are 4095 bytes.
	name_255 := repeat("x", 255)
	base := concat("/", [name_255 | some _ in numbers.range(1, 16)])
	cases := [
		{"path": concat("", [base, "y"]), "want": []}, # 4096 bytes
		{"path": concat("", [base, "yz"]), "want": [too_long("path", "read_file", 4097, 16)]},
		# count() counts characters; the bound is on UTF-8 bytes: 2049 x "é" is 4098.
		{"path": repeat("\u00e9", 2048), "want": []},
		{"path": repeat("\u00e9", 2049), "want": [too_long("path", "read_file", 4098, 1)]},
		{"path": repeat("\u20ac", 1366), "want": [too_long("path", "read_file", 4098, 1)]},
		{"path": concat("/", segments(256)), "want": []},
		{"path": concat("/", segments(257)), "want": [too_long("path", "read_file", 513, 257)]},
		# `\` separates too, and empty segments count as written.
		{"path": concat("\\", segments(257)), "want": [too_long("path", "read_file", 513, 257)]},
		{"path": concat("", ["a", repeat("/", 255)]), "want": []},
		{"path": concat("", ["a", repeat("/", 256)]), "want": [too_long("path", "read_file", 257, 257)]},
		{"path": concat("", [repeat("./", 128), repeat("\\", 128)]), "want": [too_long("path", "read_file", 384, 257)]},
	]
	every c in cases {
		denials == c.want with input as call("read_file", {"path": c.path})
			with data.airlock.grants as grants
			with data.registry.tools as registry
			with arguments.files as file_rules
	}
}

test_every_path_argument_is_bounded_on_its_own if {
	long := repeat("a/", 300)
	denials == [
		["path_outside_workdir", `argument "from" of tool "copy_file" is "/etc/passwd", which is outside /work`],
		too_long("to", "copy_file", 600, 301),
	] with input as call("copy_file", {"from": "/etc/passwd", "to": long})
		with data.airlock.grants as grants
		with data.registry.tools as registry
		with arguments.files as file_rules
}

# Arguments that are not paths are not bounded here (the gateway caps the
# arguments as a whole).
test_other_arguments_are_not_bounded if {
	long := repeat("a/", 300)
	args := {"type": "update_file", "path": "a.py", "diff": long, "original": long}
	denials == [] with input as call("apply_patch", args)
		with data.airlock.grants as grants
		with data.registry.tools as registry
}

# The matchers never see a too-long path: replaced by ones that refuse
# everything, they still add nothing to it (and do fire for a short path, so
# the replacement works).
always_outside(path) if is_string(path)

always_protected(path) := {"the matcher ran"} if is_string(path)

test_matching_never_runs_on_a_too_long_path if {
	long := repeat("x.code-workspac/", 300)
	denials == [too_long("path", "apply_patch", 4800, 301)] with input as patch(long)
		with data.airlock.grants as grants
		with data.registry.tools as registry
		with arguments.outside_workdir as always_outside
		with arguments.protected as always_protected
		with arguments.folded_path as always_outside

	codes := {d[0] | some d in denials} with input as patch("a.py")
		with data.airlock.grants as grants
		with data.registry.tools as registry
		with arguments.outside_workdir as always_outside
		with arguments.protected as always_protected
	codes == {"path_outside_workdir", "path_protected"}
}

# The whole decision, as the gateway asks for it: denied for that reason
# alone, so a flood of these costs OPA a bound, not a timeout.
test_decision_for_the_attack_is_path_too_long if {
	every path in attack_paths {
		d := data.airlock.decision with input as patch(path)
			with data.airlock.grants as grants
			with data.registry.tools as registry
		d.allow == false
		[r.code | some r in d.reasons] == ["path_too_long"]
	}
}
