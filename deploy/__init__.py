"""Package data, not code: the default tool registry and the sandbox's
seccomp profile, installed as ``airlock.deploy`` (see [tool.setuptools] in
pyproject.toml). The rest of deploy/ (images, Prometheus, Grafana) is for
operators and is not installed."""
