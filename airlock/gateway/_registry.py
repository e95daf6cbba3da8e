"""The tool registry: which tools exist, what image and argv run them, and
their own resource limits.

Loaded from ``tool_registry.yaml`` by the gateway (to build the policy input
and the executor's run spec) and exported as OPA data (``data.registry``) so
the policy and the gateway always judge the same entries.
"""

from __future__ import annotations

import dataclasses
import ipaddress
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from types import MappingProxyType
from typing import Any, Literal

import jsonschema
import referencing
import referencing.exceptions
from referencing.jsonschema import DRAFT202012

from airlock.common import ConfigError, load_yaml_config, parse_duration_ms, parse_size
from airlock.common.egress_http import DEFAULT_FORMAT, format_problem, header_problem, method_problem, path_problem
from airlock.common.egress_http import secret_name_problem as _secret_name_problem
from airlock.common.names import DEFINE_TOOL
from airlock.gateway._model import ItemTypeName

#: The Responses API allows these characters in a function name; sticking to
#: them means every registered tool can be declared to the model as-is.
TOOL_NAME_RE = re.compile(r"^[A-Za-z0-9_-]{1,64}$")
#: ``{name}`` in an argv element is replaced by that argument's value.
PLACEHOLDER_RE = re.compile(r"\{([A-Za-z_][A-Za-z0-9_]*)\}")

#: Items the model provider runs itself. An entry of one of these types only
#: makes the hosted tool declarable (ListTools); it has no image or argv and
#: the gateway never runs it.
HOSTED_ITEM_TYPES = frozenset({"web_search_call", "file_search_call", "code_interpreter_call", "mcp_call"})
#: Built-in client-executed items: the agent finds the entry by item type, so
#: the registry may hold at most one entry of each.
BUILTIN_ITEM_TYPES = frozenset({"shell_call", "local_shell_call", "apply_patch_call", "computer_call"})
RuntimeName = Literal["runc", "runsc"]
#: Tools the gateway itself answers (never registered, never run in a
#: sandbox): a registry entry or a dynamic tool of this name would shadow it.
BUILTIN_TOOLS = frozenset({DEFINE_TOOL})


#: YAML key -> the integer field the policy and the wire use.
_LIMIT_NAMES = {
    "memory": "memory_bytes",
    "cpus": "cpu_millis",
    "pids": "pids",
    "timeout": "timeout_ms",
    "output": "output_bytes",
    "tmpfs": "tmpfs_bytes",
}


@dataclass(frozen=True)
class ToolLimits:
    """A tool's own caps. Absent means "no tool-specific cap": the profile's
    cap from policy and the executor's ceiling still apply."""

    memory: int | str | None = None
    """Memory limit (``256Mi``); swap is always disabled."""
    cpus: float | None = None
    """CPU quota in cores (``0.5``)."""
    pids: int | None = None
    """Maximum number of processes and threads."""
    timeout: int | str | None = None
    """Wall-clock timeout (``10s``); the container is killed when it expires."""
    output: int | str | None = None
    """Cap on stdout plus stderr bytes returned (``1Mi``)."""
    tmpfs: int | str | None = None
    """Size of each writable tmpfs (/tmp and the work dir)."""

    def __post_init__(self) -> None:
        # Parse eagerly so a bad value is reported when the file is loaded. A
        # zero cap would make every allow unrunnable, so it is rejected here.
        parsed = self.as_policy_limits()
        for yaml_key, key in _LIMIT_NAMES.items():
            if key in parsed and parsed[key] <= 0:
                raise ValueError(f"{yaml_key} must be > 0, got {getattr(self, yaml_key)!r}")

    def as_policy_limits(self) -> dict[str, int]:
        """The limits in the integer units the policy and the wire use."""
        out: dict[str, int] = {}
        if self.memory is not None:
            out["memory_bytes"] = parse_size(self.memory)
        if self.cpus is not None:
            out["cpu_millis"] = round(self.cpus * 1000)
        if self.pids is not None:
            out["pids"] = self.pids
        if self.timeout is not None:
            out["timeout_ms"] = parse_duration_ms(self.timeout)
        if self.output is not None:
            out["output_bytes"] = parse_size(self.output)
        if self.tmpfs is not None:
            out["tmpfs_bytes"] = parse_size(self.tmpfs)
        return out


@dataclass(frozen=True)
class ToolSandbox:
    """Where the tool runs by default; the policy decides per call
    (obligations.sandbox) and may only keep or tighten this."""

    mode: Literal["ephemeral", "session"] = "ephemeral"
    """ephemeral: a container of its own per call (the default); session: the session's container, in which
    files under /work persist from one call of the session to the next (processes never do)."""
    idle_ttl: int | str = "10m"
    """A session container ends this long after its last call (``10m``)."""
    max_lifetime: int | str = "1h"
    """... and this long after it started (``1h``)."""

    def __post_init__(self) -> None:
        if parse_duration_ms(self.idle_ttl) <= 0 or parse_duration_ms(self.max_lifetime) <= 0:
            raise ValueError("sandbox.idle_ttl and sandbox.max_lifetime must be > 0")

    def as_policy_data(self) -> dict[str, Any]:
        return {
            "mode": self.mode,
            "idle_ttl_ms": parse_duration_ms(self.idle_ttl),
            "max_lifetime_ms": parse_duration_ms(self.max_lifetime),
        }


@dataclass(frozen=True)
class ToolArtifacts:
    """Whether the tool takes artifacts as input and leaves artifacts as
    output. The policy decides per call how many and how large
    (obligations.artifacts); a tool that declares neither gets neither."""

    inputs: str | None = None
    """The argument (an array of artifact ids) whose artifacts are copied, read-only, to /inputs/<name>
    before the run; it must be a parameter of type array."""
    outputs: bool = False
    """Whether the files the run leaves under /outputs are stored as artifacts."""

    def as_policy_data(self) -> dict[str, Any]:
        return {"inputs": self.inputs or "", "outputs": self.outputs}


@dataclass(frozen=True)
class ToolDisplay:
    """A computer_call tool's desktop: what the model is told (the
    computer_use_preview tool's display size and environment) and what the
    desktop sandbox's virtual display is."""

    width: int = 1024
    """Display width in pixels."""
    height: int = 768
    """Display height in pixels."""
    environment: Literal["browser", "linux"] = "browser"
    """What the model is told it drives: a browser (kiosk) or a Linux desktop."""

    def __post_init__(self) -> None:
        if not (_MIN_DISPLAY <= self.width <= _MAX_DISPLAY and _MIN_DISPLAY <= self.height <= _MAX_DISPLAY):
            raise ValueError(f"display: width and height must be {_MIN_DISPLAY}..{_MAX_DISPLAY} pixels")


_MIN_DISPLAY, _MAX_DISPLAY = 200, 4096


@dataclass(frozen=True)
class ToolDynamic:
    """The tool can host dynamic tools (tools a model defines, admitted by
    policy): their Python program runs as this tool's ``source`` argument,
    with this tool's image, limits and sandbox."""

    source: str
    """The argument (a string argv placeholder) the generated program goes into."""


@dataclass(frozen=True)
class ToolHttpRule:
    """Requests to the host may use one of ``methods`` on a path matching one
    of ``paths``; with rules, a host allows nothing else."""

    methods: tuple[str, ...]
    """Upper-case method tokens (``GET``, ``POST``); never CONNECT."""
    paths: tuple[str, ...]
    """Path patterns starting with ``/``, no query string: ``*`` matches within one segment, ``**`` anything
    including ``/``."""
    max_body: int | str | None = None
    """Largest request body (``1Mi``); absent: no per-request cap beyond the call's egress byte limits."""

    def __post_init__(self) -> None:
        if not self.methods:
            raise ValueError("methods must not be empty")
        if not self.paths:
            raise ValueError("paths must not be empty")
        for what, values, check in (("methods", self.methods, method_problem), ("paths", self.paths, path_problem)):
            for i, value in enumerate(values):
                if problem := check(value):
                    raise ValueError(f"{what}[{i}]: {problem}")
        if self.max_body is not None and parse_size(self.max_body) <= 0:
            raise ValueError(f"max_body must be > 0, got {self.max_body!r} (limit methods to forbid a body)")

    def as_policy_data(self) -> dict[str, Any]:
        return {
            "methods": list(self.methods),
            "paths": list(self.paths),
            "max_body_bytes": parse_size(self.max_body) if self.max_body is not None else 0,
        }


@dataclass(frozen=True)
class ToolSecret:
    """A secret the egress proxy adds to every request to the host. Only its
    name is here; the value is the executor's (docs/egress.md)."""

    name: str
    """The secret's name (``^[a-z][a-z0-9_]{0,62}$``); a profile must grant it (grants ``secrets``)."""
    header: str
    """The header it goes in; not a hop-by-hop or framing header (Host, Content-Length, Proxy-*, ...)."""
    format: str = DEFAULT_FORMAT
    """The header's value: ``{value}`` (exactly once) stands for the secret (``Bearer {value}``)."""

    def __post_init__(self) -> None:
        for what, problem in (
            ("name", _secret_name_problem(self.name)),
            ("header", header_problem(self.header)),
            ("format", format_problem(self.format)),
        ):
            if problem:
                raise ValueError(f"{what}: {problem}")

    def as_policy_data(self) -> dict[str, Any]:
        return {"name": self.name, "header": self.header, "format": self.format}


@dataclass(frozen=True)
class ToolEgressHttp:
    """What the egress proxy does inside one allowlisted host's HTTPS: open
    it (TLS inspection), check each request against rules, add secrets."""

    inspect: bool | None = None
    """Open the host's TLS; implied by rules or secrets (which cannot be enforced without it)."""
    rules: tuple[ToolHttpRule, ...] = ()
    """Allowed requests; absent or empty: any method and path."""
    secrets: tuple[ToolSecret, ...] = ()
    """Secrets added to every request."""

    def __post_init__(self) -> None:
        if self.inspect is False and (self.rules or self.secrets):
            raise ValueError("inspect: false, but rules and secrets need TLS inspection")
        headers: set[str] = set()
        for i, secret in enumerate(self.secrets):
            if secret.header.lower() in headers:
                raise ValueError(f"secrets[{i}]: a second secret for header {secret.header!r}")
            headers.add(secret.header.lower())

    @property
    def inspected(self) -> bool:
        return bool(self.inspect or self.rules or self.secrets)

    def as_policy_data(self) -> dict[str, Any]:
        return {
            "inspect": self.inspected,
            "rules": [r.as_policy_data() for r in self.rules],
            "secrets": [s.as_policy_data() for s in self.secrets],
        }


#: An egress_allowlist entry as airlock.egress parses it (host[:port]).
_ENTRY_RE = re.compile(r"^(\[[0-9a-f:.]+\]|[a-z0-9_*.-]+)(:[0-9]{1,5})?$")


def allowlist_text(raw: str) -> str | None:
    """``host:port`` as airlock.egress normalizes an allowlist entry (lower
    case, no trailing dot, port 443 when absent); None when it does not parse."""
    match = _ENTRY_RE.match(raw.lower())
    if match is None:
        return None
    host, port = match.group(1), match.group(2)
    if not host.startswith("["):
        host = host.removesuffix(".")
    number = int(port[1:]) if port else 443
    if not host or not 0 < number <= 65535:  # noqa: PLR2004 - the port range
        return None
    return f"{host}:{number}"


@dataclass(frozen=True)
class Tool:
    """One registered tool."""

    description: str
    """Shown to the model when the tool is declared."""
    image: str = ""
    """Container image the tool runs in (built locally or a public image); empty for a hosted tool."""
    argv: tuple[str, ...] = ()
    """Command run in the container; ``{arg}`` placeholders take argument values. No shell is added.
    Empty for a hosted tool."""
    item_type: ItemTypeName = "function_call"
    """The Responses API item type the model emits for this tool."""
    parameters: Mapping[str, Any] = field(default_factory=lambda: MappingProxyType({"type": "object"}))
    """JSON Schema of the arguments; the gateway validates calls against it."""
    allowed_network: bool = False
    """Whether the tool may be granted egress at all."""
    egress_allowlist: tuple[str, ...] = ()
    """host[:port] globs the tool may reach when granted egress."""
    egress_allow_cidrs: tuple[str, ...] = ()
    """Networks (CIDR) the egress proxy may connect to although they are private, loopback or
    link-local (always denied otherwise). An explicit loosening: it shows in the decision's
    obligations and the audit event."""
    egress_http: Mapping[str, ToolEgressHttp] = field(default_factory=lambda: MappingProxyType({}))
    """Per allowlist entry (the key, one of ``egress_allowlist``): TLS inspection, HTTP rules and secrets
    injected by the egress proxy (docs/egress.md)."""
    runtime: RuntimeName = "runc"
    """Container runtime: runc, or runsc (gVisor) for stronger isolation."""
    env: Mapping[str, str] = field(default_factory=lambda: MappingProxyType({}))
    """The only environment variables the container gets."""
    limits: ToolLimits = field(default_factory=ToolLimits)
    """The tool's own resource caps."""
    sandbox: ToolSandbox = field(default_factory=ToolSandbox)
    """Where it runs by default: its own container per call, or the session's."""
    artifacts: ToolArtifacts = field(default_factory=ToolArtifacts)
    """Artifacts in (/inputs) and out (/outputs)."""
    dynamic: ToolDynamic | None = None
    """Whether dynamic tools may run on this tool, and how (docs/dynamic-tools.md)."""
    display: ToolDisplay | None = None
    """A computer_call tool's desktop (required for one, refused for any other; docs/computer-use.md)."""

    def _check_display(self) -> None:
        if self.item_type != "computer_call":
            if self.display is not None:
                raise ValueError("display: only a computer_call tool has a desktop")
            return
        if self.display is None:
            raise ValueError("a computer_call tool needs display: {width, height, environment}")
        if self.sandbox.mode != "session":
            raise ValueError("a computer_call tool's desktop lives for the session: sandbox.mode must be session")

    def _check_dynamic(self) -> None:
        dyn = self.dynamic
        if dyn is None:
            return
        if self.item_type != "function_call":
            raise ValueError("dynamic: only a function_call tool can host dynamic tools")
        if self.artifacts.inputs or self.artifacts.outputs:
            raise ValueError("dynamic: a tool with artifacts cannot host dynamic tools")
        required = set(self.parameters.get("required", ()))
        placeholders = {n for a in self.argv for n in PLACEHOLDER_RE.findall(a)}
        if dyn.source not in placeholders or dyn.source not in required:
            raise ValueError(f"dynamic.source: {dyn.source!r} must be a required argument used in argv")
        if placeholders != {dyn.source}:
            raise ValueError("dynamic: argv may take no argument besides dynamic.source")

    def _check_egress(self) -> None:
        for key in ("egress_allowlist", "egress_allow_cidrs"):
            if getattr(self, key) and not self.allowed_network:
                raise ValueError(f"{key} needs allowed_network: true")
        for cidr in self.egress_allow_cidrs:
            try:
                ipaddress.ip_network(cidr, strict=True)
            except ValueError as exc:
                raise ValueError(f"egress_allow_cidrs: {cidr!r} is not a network in CIDR form ({exc})") from None

    def _check_artifacts(self, schema: Any) -> None:
        arts = self.artifacts
        if (arts.inputs or arts.outputs) and self.item_type in HOSTED_ITEM_TYPES:
            raise ValueError("a hosted tool runs nothing here: it takes no artifacts")
        if arts.inputs is None:
            return
        prop = schema.get("properties", {}).get(arts.inputs) if isinstance(schema, dict) else None
        if not isinstance(prop, dict) or prop.get("type") != "array":
            raise ValueError(f"artifacts.inputs: {arts.inputs!r} must be a parameter of type array (of artifact ids)")
        if any(arts.inputs in PLACEHOLDER_RE.findall(a) for a in self.argv):
            raise ValueError(f"artifacts.inputs: {arts.inputs!r} cannot also be an argv placeholder")

    def __post_init__(self) -> None:
        if self.item_type in HOSTED_ITEM_TYPES:
            # Nothing of ours runs for a hosted tool, so nothing to run may be set.
            if self.argv or self.image or self.allowed_network:
                raise ValueError(f"a {self.item_type} tool is hosted: it takes no image, argv or network")
        elif not self.argv:
            raise ValueError("argv must not be empty")
        elif not self.image:
            raise ValueError("image must not be empty")
        if self.sandbox.mode == "session" and self.item_type in HOSTED_ITEM_TYPES:
            raise ValueError("a hosted tool runs nothing here: it has no session sandbox")
        self._check_egress()
        schema = _plain(self.parameters)
        try:
            jsonschema.Draft202012Validator.check_schema(schema)
        except jsonschema.SchemaError as exc:
            raise ValueError(f"parameters is not a valid JSON Schema: {exc.message}") from exc
        check_local_refs(schema)
        self._check_artifacts(schema)
        self._check_dynamic()
        self._check_display()
        required = set(self.parameters.get("required", ()))
        for element in self.argv:
            for name in PLACEHOLDER_RE.findall(element):
                if name not in required:
                    raise ValueError(f"argv placeholder {{{name}}} must be a required parameter")


@dataclass(frozen=True)
class RegistryFile:
    """The wire shape of tool_registry.yaml."""

    tools: Mapping[str, Tool]
    """Tool name -> tool."""


@dataclass(frozen=True)
class Registry:
    """A validated registry."""

    tools: Mapping[str, Tool]
    source: str
    _data: dict[str, dict[str, Any]] = field(default_factory=dict, repr=False, compare=False)

    def get(self, name: str) -> Tool | None:
        return self.tools.get(name)

    def tool_data(self, name: str) -> dict[str, Any]:
        """One entry as OPA sees it (``data.registry.tools[name]``). Built
        once; callers must not mutate it."""
        if name not in self._data:
            self._data[name] = self._tool_data(name)
        return self._data[name]

    def _tool_data(self, name: str) -> dict[str, Any]:
        tool = self.tools[name]
        return {
            "name": name,
            "description": tool.description,
            "item_type": tool.item_type,
            "image": tool.image,
            "argv": list(tool.argv),
            "parameters": _plain(tool.parameters),
            "allowed_network": tool.allowed_network,
            "egress_allowlist": list(tool.egress_allowlist),
            "egress_allow_cidrs": list(tool.egress_allow_cidrs),
            **(
                {"egress_http": {key: value.as_policy_data() for key, value in tool.egress_http.items()}}
                if tool.egress_http
                else {}
            ),
            "runtime": tool.runtime,
            "env": dict(tool.env),
            "limits": tool.limits.as_policy_limits(),
            "sandbox": tool.sandbox.as_policy_data(),
            "artifacts": tool.artifacts.as_policy_data(),
            **({"dynamic": {"source": tool.dynamic.source}} if tool.dynamic is not None else {}),
            **({"display": dataclasses.asdict(tool.display)} if tool.display is not None else {}),
        }

    def as_policy_data(self) -> dict[str, Any]:
        """The whole registry as the bundle's ``registry/data.json``."""
        return {"tools": {name: self.tool_data(name) for name in sorted(self.tools)}}


def load_registry(path: Path) -> Registry:
    """Loads and validates tool_registry.yaml; errors name file, key and expectation."""
    parsed = load_yaml_config(path, RegistryFile)
    for name in parsed.tools:
        if not TOOL_NAME_RE.match(name):
            raise ConfigError(str(path), f"tools.{name}", "tool names must match [A-Za-z0-9_-]{1,64}")
        if name in BUILTIN_TOOLS:
            raise ConfigError(str(path), f"tools.{name}", "is a built-in tool of the gateway; choose another name")
    seen: dict[str, str] = {}
    for name, tool in parsed.tools.items():
        if tool.item_type in BUILTIN_ITEM_TYPES:
            if tool.item_type in seen:
                raise ConfigError(
                    str(path),
                    f"tools.{name}.item_type",
                    f"at most one {tool.item_type} tool (already {seen[tool.item_type]!r})",
                )
            seen[tool.item_type] = name
        _check_egress_http(path, name, tool)
    return Registry(tools=parsed.tools, source=str(path))


def _check_egress_http(path: Path, name: str, tool: Tool) -> None:
    """Each egress_http key is one of the tool's own allowlist entries (as
    airlock.egress reads them), at most once; secrets only for an exact host."""
    entries = {t for t in map(allowlist_text, tool.egress_allowlist) if t is not None}
    keys: dict[str, str] = {}
    for key, value in tool.egress_http.items():
        where = f"tools.{name}.egress_http.{key}"
        text = allowlist_text(key)
        if text is None or text not in entries:
            listed = ", ".join(repr(e) for e in tool.egress_allowlist) or "none"
            raise ConfigError(str(path), where, f"must be one of this tool's egress_allowlist entries ({listed})")
        if text in keys:
            raise ConfigError(str(path), where, f"names the same entry as {keys[text]!r}")
        keys[text] = key
        if value.secrets and "*" in text:
            raise ConfigError(
                str(path),
                f"{where}.secrets",
                "needs an exact host: a glob would send the secrets to every host it matches",
            )


def check_local_refs(schema: Any) -> None:
    """Every $ref must point inside the schema itself and resolve.

    A well-formed schema can still point at nothing, which would otherwise
    fail on every call; and a remote $ref has no place in a sandbox policy.
    """
    resolver = referencing.Registry().with_resource("", DRAFT202012.create_resource(schema)).resolver()
    stack = [schema]
    while stack:
        node = stack.pop()
        if isinstance(node, dict):
            if "$dynamicRef" in node:
                raise ValueError("parameters: $dynamicRef is not supported")
            ref = node.get("$ref")
            if isinstance(ref, str):
                if not ref.startswith("#"):
                    raise ValueError(f"parameters: $ref {ref!r} must be local (start with '#')")
                try:
                    resolver.lookup(ref)
                except referencing.exceptions.Unresolvable as exc:
                    raise ValueError(f"parameters: $ref {ref!r} does not resolve") from exc
            stack.extend(node.values())
        elif isinstance(node, list):
            stack.extend(node)


def _plain(value: Any) -> Any:
    """Turns the loader's read-only mappings and tuples back into JSON types."""
    if isinstance(value, Mapping):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    return value
