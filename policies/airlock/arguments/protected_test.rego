# Tests of the protected paths: .git and the auto-executed files of
# data.yaml files.protected (fixtures and helpers: arguments_test.rego, same
# package).
package airlock.arguments_test

import data.airlock.arguments

git_reason := "a .git directory holds configuration and hooks that git runs (core.fsmonitor, hooks/*)"

protected_denial(path, why) := [
	"path_protected",
	sprintf("argument %q of tool %q is %q, which is protected: %s", ["path", "apply_patch", path, why]),
]

test_every_spelling_of_a_git_segment_is_protected if {
	paths := [
		".git/config",
		".git",
		".git/",
		"./.git/config",
		"/work/.git/config",
		"//work/./.git/hooks/pre-commit",
		"sub/module/.git/config",
		".GIT/config",
		".Git/hooks/post-checkout",
		".git./config", # Windows strips trailing dots and spaces
		".git . ./config",
		".git\\config", # a separator on Windows
		"sub\\.git\\hooks\\pre-commit",
		".git::$INDEX_ALLOCATION/config", # an NTFS stream of the directory
		"git~1/config", # its NTFS 8.3 short name
		"GIT~1/config",
		".g\u200cit/config", # HFS+ ignores zero-width and direction characters
		"\ufeff.git/config",
		".git\u202e/config",
		".g\u0131t/config", # dotless i and dotted capital I fold onto i
		".G\u0130T/config",
	]
	every path in paths {
		denials == [protected_denial(path, git_reason)] with input as patch(path)
			with data.airlock.grants as grants
			with data.registry.tools as registry
	}
}

test_dot_dot_to_a_git_segment_is_outside_and_protected if {
	denials == [
		["path_outside_workdir", `argument "path" of tool "apply_patch" is "a/../.git/config", which is outside /work`],
		protected_denial("a/../.git/config", git_reason),
	] with input as patch("a/../.git/config")
		with data.airlock.grants as grants
		with data.registry.tools as registry
}

test_shipped_protected_files_are_refused if {
	cases := [
		{"path": ".envrc", "entry": ".envrc"},
		{"path": "deep/sub/.envrc", "entry": ".envrc"},
		{"path": ".ENVRC.", "entry": ".envrc"},
		{"path": ".vscode/tasks.json", "entry": ".vscode/tasks.json"},
		{"path": "/work/.VSCode/Tasks.JSON", "entry": ".vscode/tasks.json"},
		{"path": ".vscode\\settings.json", "entry": ".vscode/settings.json"},
		{"path": "pkg/.vscode/launch.json", "entry": ".vscode/launch.json"},
		{"path": "proj.code-workspace", "entry": "*.code-workspace"},
		{"path": ".devcontainer/devcontainer.json", "entry": ".devcontainer"},
		{"path": ".devcontainer.json", "entry": ".devcontainer.json"},
		{"path": ".idea/workspace.xml", "entry": ".idea"},
		{"path": ".direnv/python-3.11/bin/git", "entry": ".direnv"},
		{"path": ".venv/lib/python3.11/site-packages/x.pth", "entry": ".venv"},
		{"path": "node_modules/eslint/bin/eslint.js", "entry": "node_modules"},
		{"path": ".npmrc", "entry": ".npmrc"},
		{"path": ".yarnrc", "entry": ".yarnrc"},
		{"path": ".yarnrc.yml", "entry": ".yarnrc.yml"},
		{"path": ".pnpmfile.cjs", "entry": ".pnpmfile.cjs"},
		{"path": ".mise.toml", "entry": ".mise.toml"},
		{"path": "mise.toml", "entry": "mise.toml"},
		{"path": ".python-version", "entry": ".python-version"},
		{"path": ".pre-commit-config.yaml", "entry": ".pre-commit-config.yaml"},
		{"path": ".gitattributes", "entry": ".gitattributes"},
		{"path": ".gitmodules", "entry": ".gitmodules"},
		{"path": ".gitconfig", "entry": ".gitconfig"},
		# Letters that a case-insensitive filesystem folds onto ASCII ones.
		{"path": ".gitcon\ufb01g", "entry": ".gitconfig"},
		{"path": ".vscode/\u017fettings.json", "entry": ".vscode/settings.json"},
		{"path": ".vscode/tas\u212as.json", "entry": ".vscode/tasks.json"},
		{"path": ".vscode/\u200btasks.json ", "entry": ".vscode/tasks.json"},
		{"path": ".hg/hgrc", "entry": ".hg"},
		{"path": ".bashrc", "entry": ".bashrc"},
		{"path": ".ssh/authorized_keys", "entry": ".ssh"},
	]
	every c in cases {
		why := sprintf("matches %q: %s", [c.entry, arguments.files.protected[c.entry]])
		denials == [protected_denial(c.path, why)] with input as patch(c.path)
			with data.airlock.grants as grants
			with data.registry.tools as registry
	}
}

test_ordinary_paths_are_not_protected if {
	paths := [
		"hello.py",
		"src/app/main.py",
		".github/workflows/ci.yml", # runs in CI, not on the operator's machine
		".gitignore",
		"src/.gitkeep",
		"git/config",
		"my.git/config",
		".gitx/config",
		"a.envrc",
		"envrc",
		"vscode/tasks.json",
		".vscode/extensions.json",
		"tasks.json",
		"docs/code-workspace.md",
		"notes:2024.txt",
		"",
	]
	every path in paths {
		denials == [] with input as patch(path)
			with data.airlock.grants as grants
			with data.registry.tools as registry
	}
}

test_protected_entries_come_from_data if {
	files := {
		"workdir": "/work",
		"tools": {"read_file": ["path"]},
		"protected": {"secrets": "holds keys", "*.pem": "a key", "conf/*.local": "local overrides"},
	}
	cases := [
		{"path": "secrets/a.txt", "want": [`matches "secrets": holds keys`]},
		{"path": "x/Server.PEM", "want": [`matches "*.pem": a key`]},
		{"path": "conf/app.local", "want": [`matches "conf/*.local": local overrides`]},
		{"path": "conf/app.local/x", "want": [`matches "conf/*.local": local overrides`]},
		{"path": "conf/app.locals", "want": []},
		{"path": "app.local", "want": []},
		# The list replaces the shipped one; .git stays protected regardless.
		{"path": ".envrc", "want": []},
		{"path": ".git/config", "want": [git_reason]},
	]
	every c in cases {
		denials == [[
			"path_protected",
			sprintf("argument %q of tool %q is %q, which is protected: %s", ["path", "read_file", c.path, why]),
		] |
			some why in c.want
		] with input as call("read_file", {"path": c.path})
			with data.airlock.grants as grants
			with data.registry.tools as registry
			with arguments.files as files
	}
}

test_invalid_protected_entry_denies_instead_of_being_skipped if {
	every entry in ["conf/[ab].local", "a//b", "x?", "/", "{a,b}", "Secrets", "a/./b", "..", "x.", "a/**", "b c", ""] {
		denials == [[
			"path_protected",
			sprintf(
				"protected path entry %q for tool %q is not a valid pattern; refusing rather than skipping it",
				[entry, "read_file"],
			),
		]] with input as call("read_file", {"path": "ok.txt"})
			with data.airlock.grants as grants
			with data.registry.tools as registry
			with arguments.files as {"tools": {"read_file": ["path"]}, "protected": {entry: "why"}}
	}
}
