"""Command line: `hack/cluster up|down|status|env`."""

from __future__ import annotations

import argparse
import shlex
import sys

from . import cluster, settings

PORTS_HELP = "\n".join(
    f"  {settings.port_env_var(name):<38} {default}" for name, default in settings.PORT_DEFAULTS.items()
)

EPILOG = f"""\
environment:
  KUBETUNE_STATE                         state dir (default ~/.local/state/kubetune/devcluster)
  KUBETUNE_S3_BUCKET                     bucket `up` creates (default {settings.DEFAULT_BUCKET})
  KUBETUNE_CACHE                         where the build script caches binaries (default ~/.cache/kubetune)
ports (all on 127.0.0.1):
{PORTS_HELP}
"""


def env_lines() -> list[str]:
    values = settings.cluster_env()
    lines = [f"export {k}={shlex.quote(v)}" for k, v in values.items()]
    # $PATH must stay unquoted-expandable, so only the bin dir is quoted.
    lines.append(f'export PATH={shlex.quote(str(settings.bin_dir()))}:"$PATH"')
    return lines


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="hack/cluster",
        description="A local Kubernetes control plane, node agent and S3 store, all on loopback.",
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser("up", help="build binaries if needed, start everything, wait until ready")
    down = sub.add_parser("down", help="stop everything, keep the state dir")
    down.add_argument("--purge", action="store_true", help="also delete the state dir")
    sub.add_parser("status", help="show each component; exit 1 unless all are up and ready")
    sub.add_parser("env", help='print exports for clients: eval "$(hack/cluster env)"')
    args = parser.parse_args(argv)

    if args.command == "up":
        return cluster.up()
    if args.command == "down":
        return cluster.down(purge=args.purge)
    if args.command == "status":
        return cluster.status()
    try:
        print("\n".join(env_lines()))
    except RuntimeError as e:
        print(f"devcluster: {e}", file=sys.stderr)
        return 1
    return 0
