"""python -m devcluster.nodeagent: run the local cluster's node agent in the foreground."""

from __future__ import annotations

import argparse
import logging
import signal
import sys
from pathlib import Path

from .agent import NodeAgent


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--kubeconfig", type=Path, required=True)
    parser.add_argument("--state-dir", type=Path, required=True)
    parser.add_argument("--apiserver-host", default="127.0.0.1")
    parser.add_argument("--apiserver-port", type=int, required=True)
    parser.add_argument("--ca-file", type=Path, required=True)
    parser.add_argument("--kubelet-port-base", type=int, default=26250)
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    args.state_dir.mkdir(parents=True, exist_ok=True)
    agent = NodeAgent(
        args.kubeconfig,
        args.state_dir,
        args.apiserver_host,
        args.apiserver_port,
        args.ca_file,
        args.kubelet_port_base,
    )

    def on_signal(signum: int, _frame: object) -> None:
        logging.info("signal %d: stopping pod processes", signum)
        agent.shutdown()
        sys.exit(0)

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    agent.run()


if __name__ == "__main__":
    main()
