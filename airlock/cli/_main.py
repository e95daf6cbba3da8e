"""The ``airlock`` command."""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path

from airlock import ConfigError, auditlog
from airlock._tls import ClientTLS
from airlock.cli import _client
from airlock.cli._paths import DEFAULT_POLICIES, DEFAULT_REGISTRY, DEV_PRINCIPAL, default_home, find_opa


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
        "--workspace", type=Path, default=None, help="directory apply_patch edits (default: apply_patch not offered)"
    )


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="airlock", description="Airlock: a policy gateway for agent tool calls")
    p.add_argument(
        "--home",
        type=Path,
        default=None,
        help="state folder of the local stack (default: $AIRLOCK_HOME or ~/.local/state/airlock)",
    )
    sub = p.add_subparsers(dest="command", required=True)

    up = sub.add_parser("up", help="run OPA, the executor and the gateway in the foreground")
    up.add_argument("--policies", type=Path, default=DEFAULT_POLICIES)
    up.add_argument("--registry", type=Path, default=DEFAULT_REGISTRY)
    up.add_argument("--gateway-listen", default="127.0.0.1:50051")
    up.add_argument("--opa-port", type=int, default=8181, help="0 picks a free port")
    up.add_argument("--gateway-metrics", default="127.0.0.1:9464")
    up.add_argument("--executor-metrics", default="127.0.0.1:9465")
    up.add_argument("--opa-timeout-ms", type=int, default=250)
    up.add_argument(
        "--egress-config", type=Path, default=None, help="YAML of the executor's egress section (limits, hosts)"
    )

    for name, help_text in (
        ("call", "decide and execute one tool call"),
        ("decide", "print the decision for a call without executing it"),
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
        c.add_argument("--timeout", type=float, default=120.0, help="seconds")

    d = next(a for a in sub.choices.values() if a.prog.endswith(" decide"))
    d.add_argument("--offline", action="store_true", help="evaluate the policy files directly (no gateway needed)")
    d.add_argument("--principal", default=None, help="offline only: the principal id to decide for (default dev-agent)")
    d.add_argument("--profile", default="default", help="offline only: the principal's profile")
    d.add_argument("--policies", type=Path, default=DEFAULT_POLICIES)
    d.add_argument("--registry", type=Path, default=DEFAULT_REGISTRY)

    t = sub.add_parser("tools", help="list the tools this agent may use")
    t.add_argument("--gateway", default=None)
    t.add_argument("--token-file", type=Path, default=None)
    _tls_args(t)
    t.add_argument("--timeout", type=float, default=10.0)

    audit = sub.add_parser("audit", help="work with the audit log")
    audit_sub = audit.add_subparsers(dest="audit_command", required=True)
    verify = audit_sub.add_parser("verify", help="check the audit log's hash chain; report the first tampered event")
    verify.add_argument("paths", nargs="+", type=Path, help="audit files, rotated ones included, in any order")
    verify.add_argument("--key-file", type=Path, default=None, help="the gateway's audit key (default: the stack's)")
    verify.add_argument("--no-key", action="store_true", help="the log was written without a key (plain SHA-256)")
    verify.add_argument(
        "--partial", action="store_true", help="the oldest files were archived: accept a chain that starts mid-way"
    )

    _agent_args(sub.add_parser("agent", help="run an LLM agent whose tool calls all go through the gateway"))

    chk = sub.add_parser("check", help="validate the registry and policies offline")
    chk.add_argument("--policies", type=Path, default=DEFAULT_POLICIES)
    chk.add_argument("--registry", type=Path, default=DEFAULT_REGISTRY)
    return p


def _audit_verify(args: argparse.Namespace, home: Path) -> int:
    key: bytes | None = None
    if not args.no_key:
        key_file = args.key_file or home / "audit.key"
        if not key_file.exists():
            print(f"airlock: no audit key at {key_file}; pass --key-file or --no-key", file=sys.stderr)
            return _client.EXIT_USAGE
        key = key_file.read_bytes().strip()
    files = auditlog.order_files(args.paths)
    report = auditlog.verify(files, key, start=None if args.partial else auditlog.ChainState())
    if report.problem is not None:
        print(f"FAIL: {report.problem}")
        print(f"      ({report.events} events verified before it)")
        return 1
    print(
        f"ok: {report.events} events in {report.files} file(s), seq {report.first_seq or 0}..{report.last.seq}, "
        "chain intact"
    )
    return _client.EXIT_OK


def _decide_offline(args: argparse.Namespace) -> int:
    opa = find_opa()
    if opa is None:
        print("airlock: opa not found; run scripts/bootstrap", file=sys.stderr)
        return _client.EXIT_USAGE
    # Imported here: it pulls in the gateway's registry and schema code,
    # which `airlock call` (the hot path) does not need.
    from airlock.cli._offline import decide_offline  # noqa: PLC0415

    code, out = decide_offline(
        opa,
        policies=args.policies,
        registry_path=args.registry,
        tool=args.tool,
        arguments=args.arguments,
        item_type=args.item_type,
        principal=args.principal or DEV_PRINCIPAL,
        profile=args.profile,
        session=args.session,
    )
    print(json.dumps(out, indent=2))
    return code


def main(argv: list[str] | None = None) -> int:  # noqa: PLR0911 - one exit per subcommand
    args = _parser().parse_args(argv)
    home: Path = args.home or default_home()
    try:
        if args.command == "up":
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
                )
            )
        if args.command == "audit":
            return _audit_verify(args, home)
        if args.command == "check":
            opa = find_opa()
            if opa is None:
                print("airlock: opa not found; run scripts/bootstrap", file=sys.stderr)
                return _client.EXIT_USAGE
            from airlock.cli._bundle import build_bundle  # noqa: PLC0415 - keeps `airlock call` light

            subprocess.run([opa, "check", "--strict", str(args.policies)], check=True)  # noqa: S603
            bundle = build_bundle(opa, args.policies, args.registry, home / "check-bundle.tar.gz")
            print(f"ok: registry {args.registry} and policies {args.policies} (revision {bundle.revision})")
            return _client.EXIT_OK
        if args.command == "agent":
            from agent import Gateway  # noqa: PLC0415 - keeps the openai SDK off the other commands
            from agent._cli import run_cli  # noqa: PLC0415

            target = _client.resolve_target(home, args.gateway, args.token_file, _tls(args), args.principal)
            with Gateway(target.address, target.token, tls=target.tls, timeout_s=args.timeout) as gateway:
                return run_cli(
                    gateway,
                    args.prompt,
                    model=args.model,
                    max_turns=args.max_turns,
                    max_tool_calls=args.max_tool_calls,
                    parallel=args.parallel,
                    session_id=args.session,
                    stream=args.stream,
                    workspace=args.workspace,
                )
        if args.command == "decide" and (args.offline or args.principal or not (home / "stack.json").exists()):
            return _decide_offline(args)
        target = _client.resolve_target(home, args.gateway, args.token_file, _tls(args))
        if args.command == "tools":
            return _client.tools(target, args.timeout)
        fn = _client.call if args.command == "call" else _client.decide
        return fn(
            target,
            args.tool,
            args.arguments,
            item_type=args.item_type,
            call_id=args.call_id,
            session=args.session,
            timeout_s=args.timeout,
        )
    except (ConfigError, ValueError) as exc:
        print(f"airlock: {exc}", file=sys.stderr)
        return _client.EXIT_USAGE
    except (FileNotFoundError, subprocess.CalledProcessError, RuntimeError) as exc:
        print(f"airlock: {exc}", file=sys.stderr)
        return _client.EXIT_USAGE
