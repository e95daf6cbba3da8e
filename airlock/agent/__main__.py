"""``python -m airlock.agent run PROMPT``: the agent loop with nothing but the
``airlock[agent]`` extra installed -- for an agent container next to its
gateway sidecar, where the full ``airlock`` CLI (and its stack files) is
neither installed nor wanted. The gateway address and the token file come
from flags or from ``AIRLOCK_AGENT_GATEWAY`` / ``AIRLOCK_AGENT_TOKEN_FILE``;
the model from ``OPENAI_API_KEY`` / ``OPENAI_BASE_URL`` as with the SDK."""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

from airlock.agent._cli import EXIT_USAGE, run_args
from airlock.agent._tools import COMPUTER_SHAPES
from airlock.common.client import GatewayClient


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m airlock.agent", description="Airlock agent loop")
    sub = parser.add_subparsers(dest="command", required=True)
    run = sub.add_parser("run", help="run the Responses API loop on a prompt")
    run.add_argument("prompt")
    run.add_argument("--gateway", default=os.environ.get("AIRLOCK_AGENT_GATEWAY", "127.0.0.1:50051"))
    run.add_argument("--token-file", type=Path, default=os.environ.get("AIRLOCK_AGENT_TOKEN_FILE"))
    run.add_argument("--model", default="gpt-4.1")
    run.add_argument("--max-turns", type=int, default=8)
    run.add_argument("--max-tool-calls", type=int, default=32)
    run.add_argument("--parallel", type=int, default=4)
    run.add_argument("--session", default=None)
    run.add_argument("--timeout", type=float, default=120.0, help="seconds per gateway call")
    run.add_argument("--stream", action="store_true")
    run.add_argument(
        "--computer",
        choices=COMPUTER_SHAPES,
        default="computer",
        help="how a granted computer tool is declared: computer (a batch of actions) or computer_use_preview",
    )
    args = parser.parse_args(argv)
    if args.token_file is None:
        print("airlock agent: --token-file or AIRLOCK_AGENT_TOKEN_FILE is required", file=sys.stderr)  # noqa: T201
        return EXIT_USAGE
    try:
        token = Path(args.token_file).read_text(encoding="utf-8").strip()
    except OSError as exc:
        print(f"airlock agent: cannot read {args.token_file}: {exc.strerror}", file=sys.stderr)  # noqa: T201
        return EXIT_USAGE
    with GatewayClient(args.gateway, token, timeout_s=args.timeout) as gateway:
        return run_args(gateway, args)


if __name__ == "__main__":
    sys.exit(main())
