"""Command line: ``python -m lab up|down|status|env|seed|service NAME ACTION``."""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys

from ansible_collections.lifeboat.dr.plugins.module_utils.util.errors import ConfigError, LifeboatError
from ansible_collections.lifeboat.dr.plugins.module_utils.util.progress import get_logger
from lab import services
from lab.envinfo import env, export_lines
from lab.layout import load_layout

KINDS = ("process", "compose")


def lab_kind(args: argparse.Namespace) -> str:
    """The lab kind of a command: ``--kind``, else ``$LAB_KIND``, else ``process``."""
    kind = getattr(args, "kind", None) or os.environ.get("LAB_KIND", "").strip() or "process"
    if kind not in KINDS:
        raise ConfigError(f"LAB_KIND={kind!r} is not a lab kind", hint=f"use one of: {', '.join(KINDS)}")
    return kind


def run_compose(args: argparse.Namespace) -> int:
    """``up|down|status|env`` of the compose lab (lab/compose/lab.py)."""
    from lab.compose import lab as compose_lab

    if args.command == "env":
        sys.stdout.write(export_lines(compose_lab.env()))
        return 0
    if args.command == "up":
        rows = compose_lab.up(seed_rows=args.rows)
    elif args.command == "down":
        compose_lab.down()
        rows = compose_lab.status() if compose_lab.load_compose_layout().compose_dir.exists() else []
    else:
        rows = compose_lab.status()
    if getattr(args, "json", False):
        print(json.dumps(rows, indent=2))
        return 0
    layout = compose_lab.load_compose_layout()
    print(f"{'SERVICE':8} {'COMPONENT':9} {'STATE':8} {'HEALTH':9} {'ADDRESS':22} VOLUME")
    for row in rows:
        print(f"{row['service']:8} {row['component']:9} {row['state']:8} {row['health'] or '-':9} "
              f"{row['address']:22} {row['volume']}")
    print(f"project {layout.project}  subnet {layout.subnet}  DOCKER_HOST={layout.docker_host}  "
          f"state folder: {layout.state_dir}")
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m lab", description="Private MariaDB/Redis/OpenBao/app lab.")
    parser.add_argument("-q", "--quiet", action="store_true", help="only print errors")
    sub = parser.add_subparsers(dest="command", required=True)
    up = sub.add_parser("up", help="start everything (idempotent)")
    up.add_argument("--rows", type=int, default=None, help="demo rows if seeding is needed")
    down = sub.add_parser("down", help="stop every process the lab started (compose: remove what it made)")
    st = sub.add_parser("status", help="what runs where")
    st.add_argument("--json", action="store_true", help="print JSON instead of a table")
    env_parser = sub.add_parser("env", help="print export lines of the LAB_* variables (contains secrets)")
    for kind_parser in (up, down, st, env_parser):
        kind_parser.add_argument("--kind", choices=KINDS, default=None,
                                 help="process (default) or compose; default: $LAB_KIND, else process")
    sd = sub.add_parser("seed", help="(re)seed the demo data (idempotent)")
    sd.add_argument("--rows", type=int, default=None, help="number of customers (orders: twice; default 2000)")
    sv = sub.add_parser("service", help="act on one service")
    sv.add_argument("name", choices=services.SERVICES)
    sv.add_argument("action", choices=["start", "stop", "restart", "status"])
    add_multihost_parser(sub)
    return parser


def add_multihost_parser(sub) -> None:
    """``multihost up|down|status|partition HOST [--seconds N]|heal HOST`` (lab/netns.py; root only)."""
    from lab import netns

    mh = sub.add_parser("multihost", help="lab hosts in network namespaces, reached over SSH (root)")
    mh_sub = mh.add_subparsers(dest="mh_command", required=True)
    mh_up = mh_sub.add_parser("up", help="bridge, namespaces, sshd and services (idempotent)")
    mh_up.add_argument("--rows", type=int, default=None, help="demo rows if seeding is needed")
    mh_sub.add_parser("down", help="stop everything and remove namespaces, bridge and guard route")
    mh_st = mh_sub.add_parser("status", help="network, hosts and services")
    mh_st.add_argument("--json", action="store_true")
    part = mh_sub.add_parser("partition", help="take a host's link down")
    part.add_argument("host", choices=list(netns.HOSTS))
    part.add_argument("--seconds", type=float, default=None, help="heal by itself after N seconds")
    heal = mh_sub.add_parser("heal", help="bring a host's link back up")
    heal.add_argument("host", choices=list(netns.HOSTS))


def run_multihost(args: argparse.Namespace) -> int:
    from lab import netns

    if args.mh_command == "up":
        report = netns.up(seed_rows=args.rows)
    elif args.mh_command == "down":
        netns.down()
        report = netns.status()
    elif args.mh_command == "partition":
        netns.partition(args.host, args.seconds)
        return 0
    elif args.mh_command == "heal":
        netns.heal(args.host)
        return 0
    else:
        report = netns.status()
    if getattr(args, "json", False):
        print(json.dumps(report, indent=2))
        return 0
    print(f"subnet {report['subnet']}  bridge {report['bridge']} {'up' if report['bridge_up'] else 'down'}  "
          f"guard route {'present' if report['guard_route'] else 'absent'}  state {report['state_dir']}")
    for host, info in report["hosts"].items():
        print(f"  {host:8} {info['address']:12} ns={'yes' if info['namespace_exists'] else 'no':3} "
              f"link={'up' if info['veth_up'] else 'down':4} sshd={info['sshd_pid'] or '-'}")
    if report["services"]:
        print(format_table([services.ServiceStatus(**row) for row in report["services"]]))
    return 0


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
    if args.command == "multihost":
        return run_multihost(args)
    if args.command in ("up", "down", "status", "env") and lab_kind(args) == "compose":
        return run_compose(args)
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
        from lab import seed  # imports the demo app: only when seeding

        layout = load_layout()
        with services.locked(layout):
            seed.seed(layout, rows=args.rows if args.rows is not None else seed.DEFAULT_ROWS)
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
