"""Package data, not code: the default Rego policy library, installed as
``airlock.policies`` (see [tool.setuptools] in pyproject.toml). Its guide is
policies/README.md."""
