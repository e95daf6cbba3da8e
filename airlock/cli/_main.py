"""The ``airlock`` command."""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path
from typing import Any

from airlock.cli import _approvals_cmd, _audit_cmd, _client, _replay
from airlock.cli._drop import DropError, drop_to_agent
from airlock.cli._paths import DEFAULT_POLICIES, DEFAULT_REGISTRY, DEV_PRINCIPAL, DEV_PROFILE, default_home, find_opa
from airlock.common import ConfigError
from airlock.common._tls import ClientTLS
from airlock.common.stackfile import StaleStackError


def _tls_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--tls-ca", default=None, help="CA bundle of the gateway's certificate (enables TLS)")
    p.add_argument("--tls-cert", default=None, help="client certificate, for mTLS")
    p.add_argument("--tls-key", default=None, help="client private key, for mTLS")
    p.add_argument("--tls-server-name", default=None, help="name to verify the gateway certificate against")


def _tls(args: argparse.Namespace) -> ClientTLS | None:
    if args.tls_ca is None:
        return None
    return ClientTLS(args.tls_ca, args.tls_cert, args.tls_key, args.tls_server_name)


def _agent_args(ag: argparse.ArgumentParser) -> None:
    """`airlock agent run`."""
    ag_sub = ag.add_subparsers(dest="agent_command", required=True)
    ar = ag_sub.add_parser("run", help="run the Responses API loop on a prompt (OPENAI_API_KEY, OPENAI_BASE_URL)")
    ar.add_argument("prompt")
    ar.add_argument("--model", default="gpt-4.1")
    ar.add_argument("--max-turns", type=int, default=8, help="model responses before giving up")
    ar.add_argument("--max-tool-calls", type=int, default=32)
    ar.add_argument("--parallel", type=int, default=4, help="calls of one response run at once")
    ar.add_argument("--session", default=None, help="session id for budget rules (default: the first response id)")
    ar.add_argument("--gateway", default=None, help="host:port (default: from the running `airlock up`)")
    ar.add_argument("--token-file", type=Path, default=None)
    ar.add_argument(
        "--principal", default=None, help="use this principal's token from the running stack (e.g. dev-untrusted)"
    )
    _tls_args(ar)
    ar.add_argument("--timeout", type=float, default=120.0, help="seconds per gateway call")
    ar.add_argument("--stream", action="store_true", help="stream responses; calls start at response.output_item.done")
    ar.add_argument(
        "--computer",
        # airlock.agent's COMPUTER_SHAPES, spelled out: the agent (and the
        # openai SDK with it) is imported only once `agent run` starts.
        choices=("computer", "computer_use_preview"),
        default="computer",
        help="how a granted computer tool is declared: computer (a batch of actions) or computer_use_preview",
    )
    ar.add_argument(
        "--workspace", type=Path, default=None, help="directory apply_patch edits (default: apply_patch not offered)"
    )


def _agent_identity_args(c: argparse.ArgumentParser) -> None:
    c.add_argument(
        "--as-root",
        action="store_true",
        help="do not switch to the principal's agent user when run as root (an operator's choice, not an agent's)",
    )


def _artifacts_args(a: argparse.ArgumentParser) -> None:
    """`airlock artifacts put|get|ls|rm|stat`."""
    a_sub = a.add_subparsers(dest="artifacts_command", required=True)
    put = a_sub.add_parser("put", help="store FILE as an artifact")
    put.add_argument("file", type=Path)
    put.add_argument("--name", default=None, help="the artifact's name (default: the file's name)")
    put.add_argument("--session", default="", help="the session it belongs to (default: shared by your sessions)")
    put.add_argument("--media-type", default="", help="e.g. text/csv")
    get = a_sub.add_parser("get", help="download an artifact (by id, or the newest with this name)")
    get.add_argument("ref")
    get.add_argument("-o", "--output", type=Path, default=None, help="where to write it (default: ./<name>)")
    ls = a_sub.add_parser("ls", help="list your artifacts, one JSON object per line")
    ls.add_argument("--session", default="", help="only this session's")
    ls.add_argument("--shared", action="store_true", help="only the shared ones (put without a session)")
    ls.add_argument("--prefix", default="", help="only names that start with this")
    rm = a_sub.add_parser("rm", help="delete an artifact")
    rm.add_argument("ref")
    st = a_sub.add_parser("stat", help="one artifact's reference")
    st.add_argument("ref")
    for c in (put, get, ls, rm, st):
        c.add_argument("--gateway", default=None, help="host:port (default: from the running `airlock up`)")
        c.add_argument("--token-file", type=Path, default=None)
        c.add_argument("--principal", default=None, help="use this principal's credential from the running stack")
        _tls_args(c)
        _agent_identity_args(c)
        c.add_argument("--timeout", type=float, default=120.0, help="seconds")
        c.set_defaults(handler=_artifacts)


def _images_args(img: argparse.ArgumentParser) -> None:
    i_sub = img.add_subparsers(dest="images_command", required=True)
    for name, help_text in (
        ("build", "build every registry image (deploy/images) and record each one's engine id"),
        ("ls", "each registry image: pinned digest, size, last scan, what the image gate says"),
        ("sbom", "write the CycloneDX SBOM of a tool's (or an image's) pinned image"),
        ("scan", "scan every pinned registry image with Trivy (offline) and store the summaries"),
        ("pins", "print the pins and last scans as policy build --pins and a chart's gateway.imagePins take them"),
    ):
        c = i_sub.add_parser(name, help=help_text)
        c.add_argument("--registry", type=Path, default=DEFAULT_REGISTRY)
        c.set_defaults(handler=_images)
        if name == "sbom":
            c.add_argument("target", help="a tool name or an image reference")
        if name == "scan":
            c.add_argument(
                "--db",
                type=Path,
                default=None,
                help="the Trivy vulnerability DB folder (trivy.db, metadata.json); default $AIRLOCK_TRIVY_DB, "
                "else HOME/images/trivy-db (docs/images.md)",
            )
        if name == "ls":
            c.add_argument("--policies", type=Path, default=DEFAULT_POLICIES)
            c.add_argument("--profile", default=DEV_PROFILE, help="the profile the image gate is asked about")


def _parser() -> argparse.ArgumentParser:  # noqa: PLR0915 - one flat list of commands reads best
    p = argparse.ArgumentParser(prog="airlock", description="Airlock: a policy gateway for agent tool calls")
    p.add_argument(
        "--home",
        type=Path,
        default=None,
        help="state folder of the local stack (default: $AIRLOCK_HOME, /var/lib/airlock as root, "
        "else ~/.local/state/airlock)",
    )
    sub = p.add_subparsers(dest="command", required=True)

    up = sub.add_parser("up", help="run OPA, the executor and the gateway in the foreground")
    up.add_argument("--policies", type=Path, default=DEFAULT_POLICIES)
    up.add_argument("--registry", type=Path, default=DEFAULT_REGISTRY)
    up.add_argument("--gateway-listen", default="127.0.0.1:50051")
    up.add_argument("--opa-port", type=int, default=8181, help="OPA's health/metrics port; 0 picks a free port")
    up.add_argument("--gateway-metrics", default="127.0.0.1:9464")
    up.add_argument("--executor-metrics", default="127.0.0.1:9465")
    up.add_argument("--opa-timeout-ms", type=int, default=250)
    up.add_argument(
        "--egress-config", type=Path, default=None, help="YAML of the executor's egress section (limits, hosts)"
    )
    up.add_argument(
        "--dev", action="store_true", help="publish every edit of the policies or the registry automatically"
    )
    up.add_argument(
        "--rescan-hours",
        type=float,
        default=0,
        help="scan the registry's images with Trivy at start and every N hours, then publish (docs/images.md)",
    )
    up.add_argument("--trivy-db", type=Path, default=None, help="the Trivy DB folder for --rescan-hours")
    up.set_defaults(handler=_up)

    for name, help_text, handler in (
        ("call", "decide and execute one tool call", _call),
        ("decide", "print the decision for a call without executing it", _decide),
    ):
        c = sub.add_parser(name, help=help_text)
        c.add_argument("tool")
        c.add_argument("arguments", help='the raw arguments string, e.g. \'{"code": "print(1)"}\'')
        c.add_argument("--item-type", choices=sorted(_client.ITEM_TYPES), default="function_call")
        c.add_argument("--call-id", default=None, help="default: a fresh call_<hex>")
        c.add_argument("--session", default="")
        c.add_argument("--gateway", default=None, help="host:port (default: from the running `airlock up`)")
        c.add_argument("--token-file", type=Path, default=None)
        _tls_args(c)
        _agent_identity_args(c)
        c.add_argument("--timeout", type=float, default=120.0, help="seconds")
        c.set_defaults(handler=handler)
    sub.choices["call"].add_argument(
        "--principal", default=None, help="use this principal's credential from the running stack (e.g. dev-untrusted)"
    )

    d = sub.choices["decide"]
    d.add_argument("--offline", action="store_true", help="evaluate the policy files directly (no gateway needed)")
    d.add_argument("--principal", default=None, help="offline only: the principal id to decide for (default dev-agent)")
    d.add_argument("--profile", default="default", help="offline only: the principal's profile")
    d.add_argument("--policies", type=Path, default=DEFAULT_POLICIES)
    d.add_argument("--registry", type=Path, default=DEFAULT_REGISTRY)

    _artifacts_args(sub.add_parser("artifacts", help="put, get, list, stat and remove artifacts on the gateway"))

    t = sub.add_parser("tools", help="list the tools this agent may use; list, show, promote and retire dynamic tools")
    t.add_argument("action", nargs="?", choices=["ls", "show", "promote", "retire"], default="ls")
    t.add_argument("id", nargs="?", default="", help="show, promote, retire: the definition id (tool_...)")
    t.add_argument("--dynamic", action="store_true", help="ls: the dynamic tools (definitions) you see")
    t.add_argument("--all", action="store_true", help="ls --dynamic: everyone's, retired too (operators only)")
    t.add_argument("--session", default="", help="ls: include this session's own dynamic tools")
    t.add_argument("--to", default="", help="promote: 'principal' (its owner's sessions) or 'profile:NAME'")
    t.add_argument("--json", action="store_true", help="show: print JSON instead of escaped text")
    t.add_argument("--gateway", default=None)
    t.add_argument("--token-file", type=Path, default=None)
    t.add_argument("--principal", default=None, help="use this principal's credential from the running stack")
    _tls_args(t)
    _agent_identity_args(t)
    t.add_argument("--timeout", type=float, default=10.0)
    t.set_defaults(handler=_tools)

    ss = sub.add_parser(
        "sessions", help="list live session sandboxes (yours; --all: everyone's, operators only), or end one"
    )
    ss.add_argument("action", nargs="?", choices=["list", "end"], default="list")
    ss.add_argument("id", nargs="?", default="", help="end: the sandbox id (sbx-...) to end")
    ss.add_argument("--session", default="", help="end: every sandbox of this session of yours")
    ss.add_argument("--all", action="store_true", help="list: every principal's (needs the operator role)")
    ss.add_argument("--gateway", default=None)
    ss.add_argument("--token-file", type=Path, default=None)
    ss.add_argument(
        "--principal", default=None, help="use this principal's credential from the running stack (dev-operator)"
    )
    _tls_args(ss)
    _agent_identity_args(ss)
    ss.add_argument("--timeout", type=float, default=60.0)
    ss.set_defaults(handler=_sessions)

    ap = sub.add_parser("approvals", help="list, show, approve and deny calls held for approval (approvers only)")
    _approvals_cmd.add_arguments(ap)
    ap.add_argument("--gateway", default=None)
    ap.add_argument("--token-file", type=Path, default=None)
    ap.add_argument("--principal", default=None, help="use this principal's credential from the running stack")
    _tls_args(ap)
    _agent_identity_args(ap)
    ap.add_argument("--timeout", type=float, default=30.0)
    ap.set_defaults(handler=_approvals)

    _audit_cmd.add_parser(sub)
    sub.choices["audit"].set_defaults(handler=lambda args, _home: _audit_cmd.run(args))

    ag = sub.add_parser("agent", help="run an LLM agent whose tool calls all go through the gateway")
    _agent_args(ag)
    _agent_identity_args(ag)
    ag.set_defaults(handler=_agent)

    pol = sub.add_parser("policy", help="publish policy changes (operator)")
    pol_sub = pol.add_subparsers(dest="policy_command", required=True)
    pub = pol_sub.add_parser(
        "publish", help="build, sign and publish the policies and registry to the running stack's OPA"
    )
    pub.add_argument("--policies", type=Path, default=DEFAULT_POLICIES)
    pub.add_argument("--registry", type=Path, default=DEFAULT_REGISTRY)
    pub.add_argument(
        "--allow-builtin",
        action="append",
        default=[],
        metavar="NAME",
        help="let policies use a builtin that is off by default (http.send, net.lookup_ip_addr, opa.runtime)",
    )
    pub.set_defaults(handler=_publish)
    bld = pol_sub.add_parser(
        "build", help="build and sign a bundle for a deployment's bundle server (the explicit signed step)"
    )
    bld.add_argument("--signing-key", type=Path, required=True, help="RSA private key (PEM) the bundle is signed with")
    bld.add_argument("--out", type=Path, required=True, help="bundle file to write (replaced atomically)")
    bld.add_argument("--policies", type=Path, default=DEFAULT_POLICIES)
    bld.add_argument("--registry", type=Path, default=DEFAULT_REGISTRY)
    bld.add_argument("--allow-builtin", action="append", default=[], metavar="NAME")
    bld.add_argument(
        "--pins",
        type=Path,
        default=None,
        help="image pins and scans to carry as data.images (JSON, as `airlock images pins` prints; docs/images.md)",
    )
    bld.set_defaults(handler=_policy_build)
    srv = pol_sub.add_parser("serve", help="serve a bundle file to OPA (a deployment's bundle server)")
    srv.add_argument("--bundle", type=Path, required=True)
    srv.add_argument("--token-file", type=Path, required=True, help="the bearer token OPA presents (0600, ours)")
    srv.add_argument("--listen", default="127.0.0.1:8181", help="host:port")
    srv.set_defaults(handler=_policy_serve)
    _replay.add_parser(pol_sub)

    dep = sub.add_parser("deploy", help="files for the production shapes (deploy/compose, deploy/kubernetes)")
    dep_sub = dep.add_subparsers(dest="deploy_command", required=True)
    ci = dep_sub.add_parser(
        "compose-init", help="secrets, configs and the signed bundle for deploy/compose (root: files get image uids)"
    )
    ci.add_argument(
        "--state", type=Path, required=True, help="folder for the mounted files (e.g. deploy/compose/state)"
    )
    ci.add_argument(
        "--env-file", type=Path, required=True, help="compose variables to write (e.g. deploy/compose/.env)"
    )
    ci.add_argument("--policies", type=Path, default=DEFAULT_POLICIES)
    ci.add_argument("--registry", type=Path, default=DEFAULT_REGISTRY)
    ci.add_argument("--docker-gid", type=int, default=None, help="group of the Docker socket (default: its gid)")
    ci.add_argument(
        "--docker-socket",
        type=Path,
        default=Path("/var/run/docker.sock"),
        help="the engine the executor uses: its gid, and the ids the registry's images are pinned by",
    )
    ci.set_defaults(handler=_compose_init)
    rs = dep_sub.add_parser(
        "rescan", help="scan deploy/compose's pinned images with Trivy (offline), then re-sign and publish the bundle"
    )
    rs.add_argument("--state", type=Path, required=True, help="compose-init's folder (e.g. deploy/compose/state)")
    rs.add_argument(
        "--trivy-db",
        type=Path,
        default=None,
        help="the Trivy DB folder; default $AIRLOCK_TRIVY_DB, else STATE/operator/images/trivy-db",
    )
    rs.add_argument(
        "--every-hours", type=float, default=None, help="keep running: scan and publish now and every N hours"
    )
    rs.add_argument(
        "--policies",
        type=Path,
        default=None,
        help="default: the copy compose-init published, STATE/operator/policies (a rescan changes only the scans)",
    )
    rs.add_argument(
        "--registry", type=Path, default=None, help="default: the deployed copy, STATE/gateway/tool_registry.yaml"
    )
    rs.add_argument("--docker-socket", type=Path, default=Path("/var/run/docker.sock"))
    rs.set_defaults(handler=_deploy_rescan)

    _images_args(sub.add_parser("images", help="build, pin, list, SBOM and scan the registry's sandbox images"))

    chk = sub.add_parser("check", help="validate the registry and policies offline")
    chk.add_argument("--policies", type=Path, default=DEFAULT_POLICIES)
    chk.add_argument("--registry", type=Path, default=DEFAULT_REGISTRY)
    chk.set_defaults(handler=_check)
    return p


def _need_opa() -> str:
    opa = find_opa()
    if opa is None:
        raise FileNotFoundError("opa not found; run scripts/bootstrap")
    return opa


def _decide_offline(args: argparse.Namespace, home: Path) -> int:
    # Imported here: it pulls in the gateway's registry and schema code,
    # which `airlock call` (the hot path) does not need.
    from airlock.cli._images import policy_data  # noqa: PLC0415
    from airlock.cli._offline import decide_offline  # noqa: PLC0415

    code, out = decide_offline(
        _need_opa(),
        policies=args.policies,
        registry_path=args.registry,
        tool=args.tool,
        arguments=args.arguments,
        item_type=args.item_type,
        principal=args.principal or DEV_PRINCIPAL,
        profile=args.profile,
        session=args.session,
        # As `policy publish` would give them: the stack's pins and last scans.
        images=policy_data(home),
    )
    print(json.dumps(out, indent=2))
    return code


def _as_agent(args: argparse.Namespace, home: Path, principal: str | None) -> None:
    """Root never acts as an agent: switch to the principal's agent user."""
    if not args.as_root:
        drop_to_agent(home, principal)


def _up(args: argparse.Namespace, home: Path) -> int:
    from airlock.cli._up import UpOptions, run_up  # noqa: PLC0415 - keeps `airlock call` light

    return run_up(
        UpOptions(
            home=home,
            policies=args.policies,
            registry=args.registry,
            gateway_listen=args.gateway_listen,
            opa_port=args.opa_port,
            gateway_metrics=args.gateway_metrics,
            executor_metrics=args.executor_metrics,
            opa_timeout_ms=args.opa_timeout_ms,
            egress_config=args.egress_config,
            dev=args.dev,
            rescan_hours=args.rescan_hours,
            trivy_db=args.trivy_db,
        )
    )


def _call_fields(args: argparse.Namespace) -> dict[str, Any]:
    return {
        "item_type": args.item_type,
        "call_id": args.call_id,
        "session": args.session,
        "timeout_s": args.timeout,
    }


def _call(args: argparse.Namespace, home: Path) -> int:
    _as_agent(args, home, args.principal)
    target = _client.resolve_target(home, args.gateway, args.token_file, _tls(args), args.principal)
    return _client.call(target, args.tool, args.arguments, **_call_fields(args))


def _decide(args: argparse.Namespace, home: Path) -> int:
    if args.offline or args.principal or not (home / "stack.json").exists():
        return _decide_offline(args, home)
    _as_agent(args, home, None)
    target = _client.resolve_target(home, args.gateway, args.token_file, _tls(args))
    return _client.decide(target, args.tool, args.arguments, **_call_fields(args))


def _artifacts(args: argparse.Namespace, home: Path) -> int:
    from airlock.cli import _artifacts_cmd as cmd  # noqa: PLC0415 - keeps `airlock call` light

    _as_agent(args, home, args.principal)
    target = _client.resolve_target(home, args.gateway, args.token_file, _tls(args), args.principal)
    timeout = args.timeout
    match args.artifacts_command:
        case "put":
            return cmd.put(
                target, args.file, name=args.name, session=args.session, media_type=args.media_type, timeout_s=timeout
            )
        case "get":
            return cmd.get(target, args.ref, output=args.output, timeout_s=timeout)
        case "ls":
            return cmd.ls(target, session=args.session, prefix=args.prefix, shared=args.shared, timeout_s=timeout)
        case "rm":
            return cmd.rm(target, args.ref, timeout_s=timeout)
        case _:
            return cmd.stat(target, args.ref, timeout_s=timeout)


def _tools(args: argparse.Namespace, home: Path) -> int:
    from airlock.cli import _tools_cmd  # noqa: PLC0415 - keeps `airlock call` light

    if (args.action in ("show", "promote", "retire")) != bool(args.id) or (args.action == "promote") != bool(args.to):
        print("airlock tools: show, promote and retire take an id; promote needs --to", file=sys.stderr)
        return _client.EXIT_USAGE
    _as_agent(args, home, args.principal)
    target = _client.resolve_target(home, args.gateway, args.token_file, _tls(args), args.principal)
    match args.action:
        case "show":
            return _tools_cmd.show(target, args.id, as_json=args.json, timeout_s=args.timeout)
        case "promote":
            return _tools_cmd.promote(target, args.id, args.to, args.timeout)
        case "retire":
            return _tools_cmd.retire(target, args.id, args.timeout)
        case _ if args.dynamic:
            return _tools_cmd.ls_dynamic(target, everyone=args.all, session=args.session, timeout_s=args.timeout)
        case _:
            return _client.tools(target, args.timeout, session=args.session)


def _sessions(args: argparse.Namespace, home: Path) -> int:
    if args.action == "end" and bool(args.id) == bool(args.session):
        print("airlock sessions end: give a sandbox id or --session, not both", file=sys.stderr)
        return _client.EXIT_USAGE
    _as_agent(args, home, args.principal)
    target = _client.resolve_target(home, args.gateway, args.token_file, _tls(args), args.principal)
    if args.action == "end":
        return _client.end_session(target, sandbox_id=args.id, session_id=args.session, timeout_s=args.timeout)
    return _client.sessions(target, everyone=args.all, timeout_s=args.timeout)


def _approvals(args: argparse.Namespace, home: Path) -> int:
    _as_agent(args, home, args.principal)
    target = _client.resolve_target(home, args.gateway, args.token_file, _tls(args), args.principal)
    return _approvals_cmd.run(args, target)


def _agent(args: argparse.Namespace, home: Path) -> int:
    _as_agent(args, home, args.principal)
    from airlock.agent._cli import run_args  # noqa: PLC0415

    target = _client.resolve_target(home, args.gateway, args.token_file, _tls(args), args.principal)
    with target.client(args.timeout) as gateway:
        return run_args(gateway, args)


def _publish(args: argparse.Namespace, home: Path) -> int:
    from airlock.cli._layout import Layout  # noqa: PLC0415 - keeps `airlock call` light
    from airlock.cli._publish import publish  # noqa: PLC0415

    layout = Layout(home)
    if not layout.bundle_signing_key.exists():
        print(f"airlock: no stack at {home} (no {layout.bundle_signing_key}); start `airlock up`", file=sys.stderr)
        return _client.EXIT_USAGE
    published = publish(_need_opa(), layout, args.policies, args.registry, allow_builtins=args.allow_builtin)
    print(f"published policy bundle {published.revision} ({args.policies}, {args.registry}); OPA decides with it now")
    return _client.EXIT_OK


def _policy_build(args: argparse.Namespace, _home: Path) -> int:
    from airlock.cli._deploy import build_signed_bundle  # noqa: PLC0415

    pins = json.loads(args.pins.read_text(encoding="utf-8")) if args.pins is not None else None
    revision = build_signed_bundle(
        _need_opa(), args.policies, args.registry, args.signing_key, args.out, tuple(args.allow_builtin), images=pins
    )
    print(f"built signed bundle {revision} at {args.out}")
    return _client.EXIT_OK


def _policy_serve(args: argparse.Namespace, _home: Path) -> int:
    import signal  # noqa: PLC0415
    import threading  # noqa: PLC0415

    from airlock.cli._bundle_server import BundleServer  # noqa: PLC0415
    from airlock.common._daemon import split_hostport  # noqa: PLC0415
    from airlock.common._secrets import read_secret_text  # noqa: PLC0415

    token = read_secret_text(args.token_file, "bundle token file")
    host, port = split_hostport(args.listen)
    server = BundleServer(args.bundle, token, host=host, port=port)
    print(f"serving {args.bundle} at {server.url}/{args.bundle.name}", flush=True)
    done = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: done.set())
    done.wait()
    server.stop()
    return _client.EXIT_OK


def _compose_init(args: argparse.Namespace, _home: Path) -> int:
    from importlib.metadata import version  # noqa: PLC0415

    from airlock.cli._deploy import ComposeInit, compose_init  # noqa: PLC0415

    gid = args.docker_gid if args.docker_gid is not None else args.docker_socket.stat().st_gid
    published = compose_init(
        _need_opa(),
        ComposeInit(
            state=args.state,
            env_file=args.env_file,
            policies=args.policies,
            registry=args.registry,
            docker_gid=gid,
            version=version("airlock"),
            docker_socket=args.docker_socket,
        ),
    )
    for ref, digest in sorted(published.pins.items()):
        print(f"pinned {ref} {digest}")
    for ref in published.unpinned:
        print(f"not pinned {ref}: not on the engine (build it, then run compose-init again)", file=sys.stderr)
    print(
        f"wrote {args.state} and {args.env_file} (policy revision {published.revision}); next: docker compose up --wait"
    )
    return _client.EXIT_OK


def _deploy_rescan(args: argparse.Namespace, _home: Path) -> int:
    from airlock.cli._deploy import Rescan, run_rescans  # noqa: PLC0415

    if args.every_hours is not None and args.every_hours <= 0:
        raise ValueError("--every-hours must be above 0")
    rescan = Rescan(
        args.state, policies=args.policies, registry=args.registry, db=args.trivy_db, docker_socket=args.docker_socket
    )
    return run_rescans(_need_opa(), rescan, every_hours=args.every_hours)


def _images(args: argparse.Namespace, home: Path) -> int:
    from airlock.cli import _images as images  # noqa: PLC0415 - keeps `airlock call` light

    try:
        match args.images_command:
            case "build":
                for rec in images.build(home, args.registry):
                    print(json.dumps({"image": rec.image, "digest": rec.digest, "size": rec.size}))
            case "ls":
                for row in images.listing(_need_opa(), args.policies, args.registry, home, args.profile):
                    print(json.dumps(row))
            case "sbom":
                print(images.sbom(home, args.target, args.registry))
            case "pins":
                print(json.dumps(images.policy_data(home), indent=2, sort_keys=True))
            case _:
                for summary in images.scan(home, args.registry, images.db_dir(home, args.db)):
                    print(json.dumps(summary))
    except images.ImageError as exc:
        print(f"airlock images {args.images_command}: {exc.code}: {exc}", file=sys.stderr)
        return 1
    return _client.EXIT_OK


def _check(args: argparse.Namespace, home: Path) -> int:
    import tempfile  # noqa: PLC0415

    from airlock.cli import _images as images  # noqa: PLC0415 - keeps `airlock call` light
    from airlock.cli._bundle import build_bundle  # noqa: PLC0415
    from airlock.cli._opa import write_capabilities  # noqa: PLC0415

    opa = _need_opa()
    with tempfile.TemporaryDirectory(prefix="airlock-check-") as tmp:
        caps = write_capabilities(opa, Path(tmp) / "capabilities.json")
        subprocess.run(  # noqa: S603
            [opa, "check", "--strict", "--capabilities", str(caps), str(args.policies)], check=True
        )
        bundle = build_bundle(opa, args.policies, args.registry, Path(tmp) / "bundle.tar.gz", capabilities=caps)
    print(f"ok: registry {args.registry} and policies {args.policies} (revision {bundle.revision})")
    # What the image gate would say of each registry image (docs/images.md).
    for row in images.listing(opa, args.policies, args.registry, home, DEV_PROFILE):
        print(images.describe(row))
    return _client.EXIT_OK


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    home: Path = args.home or default_home()
    try:
        return int(args.handler(args, home))
    except (ConfigError, ValueError, DropError, PermissionError, StaleStackError) as exc:
        print(f"airlock: {exc}", file=sys.stderr)
        return _client.EXIT_USAGE
    except (FileNotFoundError, subprocess.CalledProcessError, RuntimeError) as exc:
        print(f"airlock: {exc}", file=sys.stderr)
        return _client.EXIT_USAGE
