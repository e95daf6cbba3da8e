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

# Hook managers, coding agents' and editors' configuration, CI run on push,
# interpreters' start-up files: the attack run's list first (each was allowed
# before), then what was found next to them.
test_hooks_agents_ci_and_startup_files_are_refused if {
	cases := [
		{"path": ".husky/pre-commit", "entry": ".husky"},
		{"path": ".husky/_/husky.sh", "entry": ".husky"},
		{"path": "lefthook.yml", "entry": "lefthook.*"},
		{"path": ".lefthook.yml", "entry": ".lefthook*"},
		{"path": ".vscode/mcp.json", "entry": ".vscode/mcp.json"},
		{"path": ".cursor/mcp.json", "entry": ".cursor"},
		{"path": ".cursor/rules/x.mdc", "entry": ".cursor"},
		{"path": ".mcp.json", "entry": ".mcp.json"},
		{"path": ".claude/settings.json", "entry": ".claude"},
		{"path": ".claude/settings.local.json", "entry": ".claude"},
		{"path": ".zed/tasks.json", "entry": ".zed"},
		{"path": ".github/workflows/ci.yml", "entry": ".github/workflows"},
		{"path": ".GitHub/Workflows/release.yaml", "entry": ".github/workflows"},
		{"path": ".gitlab-ci.yml", "entry": ".gitlab-ci.yml"},
		{"path": ".tool-versions", "entry": ".tool-versions"},
		{"path": ".nvmrc", "entry": ".nvmrc"},
		{"path": "conftest.py", "entry": "conftest.py"},
		{"path": "tests/unit/conftest.py", "entry": "conftest.py"},
		{"path": ".pdbrc", "entry": ".pdbrc"},
		{"path": ".env", "entry": ".env"},
		# Found next to them.
		{"path": "lefthook-local.yaml", "entry": "lefthook-local.*"},
		{"path": ".lefthook-local.toml", "entry": ".lefthook*"},
		{"path": ".lefthook/pre-commit/lint.sh", "entry": ".lefthook*"},
		{"path": ".overcommit.yml", "entry": ".overcommit.yml"},
		{"path": ".pre-commit-hooks.yaml", "entry": ".pre-commit-hooks.yaml"},
		{"path": "mise.local.toml", "entry": "mise.*.toml"},
		{"path": ".mise.dev.toml", "entry": ".mise.*.toml"},
		{"path": "mise/config.toml", "entry": "mise/config.toml"},
		{"path": ".node-version", "entry": ".node-version"},
		{"path": ".ruby-version", "entry": ".ruby-version"},
		{"path": ".gitpod.yml", "entry": ".gitpod.*"},
		{"path": ".gitpod.Dockerfile", "entry": ".gitpod.*"},
		{"path": ".travis.yml", "entry": ".travis.yml"},
		{"path": ".drone.yml", "entry": ".drone.yml"},
		{"path": "azure-pipelines.yml", "entry": "azure-pipelines.yml"},
		{"path": "bitbucket-pipelines.yml", "entry": "bitbucket-pipelines.yml"},
		{"path": "Jenkinsfile", "entry": "jenkinsfile"},
		{"path": ".exrc", "entry": ".exrc"},
		{"path": ".nvimrc", "entry": ".nvimrc"},
		{"path": ".nvim.lua", "entry": ".nvim.lua"},
		{"path": ".irbrc", "entry": ".irbrc"},
		{"path": ".pryrc", "entry": ".pryrc"},
		{"path": ".Rprofile", "entry": ".rprofile"},
		{"path": "pkg/__pycache__/mod.cpython-312.pyc", "entry": "__pycache__"},
		{"path": "bunfig.toml", "entry": "bunfig.toml"},
		{"path": ".bunfig.toml", "entry": ".bunfig.toml"},
		{"path": ".bash_login", "entry": ".bash_login"},
		{"path": ".zprofile", "entry": ".zprofile"},
		{"path": ".zlogin", "entry": ".zlogin"},
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
		".gitignore",
		"src/.gitkeep",
		".editorconfig",
		".eslintrc.json",
		".env.example",
		".envrc.example",
		"git/config",
		"my.git/config",
		"a.envrc",
		"envrc",
		"vscode/tasks.json",
		"tasks.json",
		"docs/code-workspace.md",
		"notes:2024.txt",
		"",
		# The project's own build and test files: running them is the user's intent.
		"Makefile",
		"pyproject.toml",
		"package.json",
		"tests/test_conftest.py",
		"docs/husky.md",
		# Instructions an agent reads are documentation, not configuration it runs.
		"AGENTS.md",
		"CLAUDE.md",
		# The open dot-directories, and a file named like a closed one.
		".github/ISSUE_TEMPLATE/bug.md",
		".github/CODEOWNERS",
		".github/dependabot.yml",
		"sub/.github/pull_request_template.md",
		".changeset/blue-cats.md",
		".well-known/security.txt",
		".cargo",
		"dir/.vscode",
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

dot_directory_reason := "it is in a dot-directory, where tools keep configuration and programs they run by themselves"

# Every dot-directory but the open ones is closed, named by an entry or not:
# new tools (and old ones nobody listed) keep what they run in them.
test_paths_in_closed_dot_directories_are_refused if {
	paths := [
		".cargo/config.toml", # cargo runs build.rustc-wrapper and target runners from it
		".circleci/config.yml",
		".buildkite/pipeline.yml",
		".gitlab/ci/build.yml",
		".githooks/pre-commit",
		".config/git/config",
		".gemini/settings.json",
		".codex/config.toml",
		".windsurf/rules/x.md",
		".mvn/extensions.xml",
		".yarn/plugins/p.cjs",
		".terraform/providers/x",
		".vscode/extensions.json",
		".gitx/config",
		"sub/dir/.tox/py312/bin/python",
		"/work/.docker/config.json",
		# Folded like every other name: case, trailing dots, invisible characters.
		".CARGO/config.toml",
		".cargo./config.toml",
		"\u200b.cargo/config.toml",
		".cargo\\config.toml",
		# A closed one inside an open one.
		".github/.hidden/x",
	]
	every path in paths {
		denials == [protected_denial(path, dot_directory_reason)] with input as patch(path)
			with data.airlock.grants as grants
			with data.registry.tools as registry
	}
}

entry_reason(entry) := sprintf("matches %q: %s", [entry, arguments.files.protected[entry]])

# The generic reason only when nothing more specific names the path.
test_specific_reasons_replace_the_dot_directory_reason if {
	cases := [
		{"path": ".git/config", "want": [git_reason]},
		{"path": ".vscode/tasks.json", "want": [entry_reason(".vscode/tasks.json")]},
		{"path": ".cargo/.envrc", "want": [entry_reason(".envrc")]},
	]
	every c in cases {
		denials == [protected_denial(c.path, why) | some why in c.want] with input as patch(c.path)
			with data.airlock.grants as grants
			with data.registry.tools as registry
	}
}

test_open_dot_directories_come_from_data if {
	read := {"read_file": ["path"]}
	cases := [
		{"files": {"tools": read, "allowed_dot_directories": [".cargo"]}, "path": ".cargo/config.toml", "want": []},
		{
			"files": {"tools": read, "allowed_dot_directories": [".cargo"]},
			"path": ".github/x.md",
			"want": [dot_directory_reason],
		},
		# Absent: none is open.
		{"files": {"tools": read}, "path": ".github/x.md", "want": [dot_directory_reason]},
		# Opening one does not open the entries inside it, nor .git.
		{
			"files": {"tools": read, "allowed_dot_directories": [".s"], "protected": {".s/k": "a key"}},
			"path": ".s/k",
			"want": [`matches ".s/k": a key`],
		},
		{"files": {"tools": read, "allowed_dot_directories": [".git"]}, "path": ".git/config", "want": [git_reason]},
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
			with arguments.files as c.files
	}
}
