"""Command line: ``python -m lab up|down|status|env|seed|service NAME ACTION``."""

from __future__ import annotations

import argparse
import json
import logging
import sys

from ansible_collections.lifeboat.dr.plugins.module_utils.errors import LifeboatError
from ansible_collections.lifeboat.dr.plugins.module_utils.progress import get_logger

from lab import seed, services
from lab.envinfo import env, export_lines
from lab.layout import load_layout


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m lab", description="Private MariaDB/Redis/OpenBao/app lab.")
    parser.add_argument("-q", "--quiet", action="store_true", help="only print errors")
    sub = parser.add_subparsers(dest="command", required=True)
    up = sub.add_parser("up", help="start everything (idempotent)")
    up.add_argument("--rows", type=int, default=None, help="demo rows if seeding is needed")
    sub.add_parser("down", help="stop every process the lab started")
    st = sub.add_parser("status", help="what runs where")
    st.add_argument("--json", action="store_true", help="print JSON instead of a table")
    sub.add_parser("env", help="print export lines of the LAB_* variables (contains secrets)")
    sd = sub.add_parser("seed", help="(re)seed the demo data (idempotent)")
    sd.add_argument("--rows", type=int, default=seed.DEFAULT_ROWS, help="number of customers (orders: twice)")
    sv = sub.add_parser("service", help="act on one service")
    sv.add_argument("name", choices=services.SERVICES)
    sv.add_argument("action", choices=["start", "stop", "restart", "status"])
    return parser


def format_table(rows: list[services.ServiceStatus]) -> str:
    lines = [f"{'SERVICE':8} {'STATE':5} {'PID':>8} {'ADDRESS':22} DATA DIR"]
    for row in rows:
        state = "up" if row.running else "down"
        if row.running != row.port_open:
            state += "?"
        lines.append(f"{row.service:8} {state:5} {row.pid or '-':>8} {row.host + ':' + str(row.port):22} "
                     f"{row.data_dir}")
    return "\n".join(lines)


def configure_logging(quiet: bool) -> None:
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("lab: %(message)s"))
    root = get_logger()
    root.addHandler(handler)
    root.setLevel(logging.WARNING if quiet else logging.INFO)


def run(args: argparse.Namespace) -> int:
    if args.command == "up":
        print(format_table(services.up(seed_rows=args.rows)))
    elif args.command == "down":
        services.down()
        print(format_table(services.status_all()))
    elif args.command == "status":
        rows = services.status_all()
        print(json.dumps([r.as_dict() for r in rows], indent=2) if args.json else format_table(rows))
        if not args.json:
            print(f"state folder: {load_layout().state_dir}")
    elif args.command == "env":
        sys.stdout.write(export_lines(env()))
    elif args.command == "seed":
        layout = load_layout()
        with services.locked(layout):
            seed.seed(layout, rows=args.rows)
    elif args.command == "service":
        action = getattr(services, args.action)
        result = action(args.name)
        if args.action == "status":
            print(format_table([result]))
        else:
            print(format_table([services.status(args.name)]))
    return 0


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    configure_logging(args.quiet or args.command == "env")
    try:
        return run(args)
    except LifeboatError as err:
        print(f"lab: error: {err}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
