"""Launcher: `python -m controller --network FILE [listen options]`.

Validates the network file first (a bad file exits 2 before anything
connects), applies the eventlet shim, then runs ryu-manager with the apps.
"""
from __future__ import annotations

import argparse
import os
import sys

from . import model, shim

APPS = ["apps.segment_switch"]


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(prog="python -m controller",
                                 description="Segment-isolating OpenFlow 1.3 controller")
    ap.add_argument("--network", required=True, help="the network file (YAML)")
    ap.add_argument("--ofp-host", default="127.0.0.1", help="OpenFlow listen address")
    ap.add_argument("--ofp-port", type=int, default=6653, help="OpenFlow listen port")
    ap.add_argument("--rest-host", default="127.0.0.1", help="REST API listen address")
    ap.add_argument("--rest-port", type=int, default=8080, help="REST API listen port")
    ap.add_argument("--log-file", help="log here instead of standard error")
    ap.add_argument("--verbose", action="store_true", help="debug logging")
    args, ryu_args = ap.parse_known_args(argv)
    try:
        model.load(args.network)
    except model.NetworkFileError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    os.environ["VGUARD_NETWORK"] = os.path.abspath(args.network)
    shim.apply()
    from ryu.cmd import manager
    ryu_argv = ["--ofp-listen-host", args.ofp_host,
                "--ofp-tcp-listen-port", str(args.ofp_port),
                "--wsapi-host", args.rest_host, "--wsapi-port", str(args.rest_port)]
    if args.log_file:
        ryu_argv += ["--log-file", args.log_file]
    if args.verbose:
        ryu_argv += ["--verbose"]
    manager.main(args=ryu_argv + ryu_args + APPS)
    return 0


if __name__ == "__main__":
    sys.exit(main())
