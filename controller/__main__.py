"""Launcher: `python -m controller --network FILE [listen options]`.

Validates the network file, the state file and the API token first (any of
them bad exits 2 before anything connects), applies the eventlet shim, then
runs ryu-manager with the apps. Settings reach the app as environment
variables, so `ryu-manager apps.segment_switch` can be run by hand too.
"""
from __future__ import annotations

import warnings

with warnings.catch_warnings():
    # eventlet warns that it is in maintenance mode; Ryu 4.34 needs it anyway.
    warnings.simplefilter("ignore", DeprecationWarning)
    import eventlet
# Green threads before any module makes a lock. Ryu's manager patches
# threads only inside its main(), after logging and Ryu's own imports have
# made RLocks that eventlet can no longer reach ("N RLock(s) were not
# greened"): a lock held by one green thread would then block them all.
eventlet.monkey_patch()

import argparse  # noqa: E402
import os  # noqa: E402
import sys  # noqa: E402

from . import auth, model, shim, store  # noqa: E402
from .flows import parse_address  # noqa: E402

APPS = ["apps.segment_switch"]
REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(prog="python -m controller",
                                 description="Segment-isolating OpenFlow 1.3 controller")
    ap.add_argument("--network", required=True, help="the network file (YAML)")
    ap.add_argument("--ofp-host", default="127.0.0.1", help="OpenFlow listen address")
    ap.add_argument("--ofp-port", type=int, default=6653, help="OpenFlow listen port")
    ap.add_argument("--rest-host", default="127.0.0.1", help="REST API listen address")
    ap.add_argument("--rest-port", type=int, default=8080, help="REST API listen port")
    ap.add_argument("--state-file",
                    help="where policy changes made through the API are saved and "
                         "restored from (default: state/<network file name>.policy.json "
                         "in the repository)")
    ap.add_argument("--token-file", help="file holding the bearer token the REST API "
                                         f"wants for writes (else ${auth.TOKEN_ENV}; "
                                         "with neither, the API is read-only)")
    ap.add_argument("--alert-token-file", metavar="PATH",
                    help="file holding a bearer token that may only post IDS alerts "
                         "(POST /api/v1/alerts; the write token may too)")
    ap.add_argument("--eve-file", metavar="PATH",
                    help="follow this Suricata eve.json as it grows (rotation survived) "
                         "and act on its alerts by the network file's response rules")
    ap.add_argument("--insecure-rest", action="store_true",
                    help="accept REST writes without a token (closed labs only)")
    ap.add_argument("--flow-collector", default="127.0.0.1:4739", metavar="HOST:PORT",
                    help="where the IPFIX collector listens for the switches' flow "
                         "samples (udp; default %(default)s; 'off': none)")
    ap.add_argument("--flow-log", metavar="PATH",
                    help="the JSON-lines flow log (default: beside the state file, "
                         "<name>.flows.jsonl; 'off': none)")
    ap.add_argument("--flow-log-max-mb", type=float, default=64,
                    help="rotate the flow log at this size (default %(default)s)")
    ap.add_argument("--flow-log-retention", type=float, default=168, metavar="HOURS",
                    help="delete rotated flow logs older than this (default %(default)s)")
    ap.add_argument("--flow-intake", type=int, default=10000, metavar="RECORDS",
                    help="flow records decoded per second at most; past it the collector "
                         "stops reading for the second and the kernel drops the rest, "
                         "counted (default %(default)s)")
    ap.add_argument("--log-file", help="log here instead of standard error")
    ap.add_argument("--verbose", action="store_true", help="debug logging")
    args, ryu_args = ap.parse_known_args(argv)
    try:
        document = model.read_document(args.network)
        network = model.from_document(document, args.network)
        state_file = os.path.abspath(args.state_file or
                                     store.default_path(REPO, args.network))
        store.load(state_file, network, document)
        token = auth.load_token(args.token_file)
        if args.alert_token_file:
            auth.load_token(args.alert_token_file)
        flow_settings = _flow_settings(args, state_file)
    except (model.NetworkFileError, store.StateFileError, auth.TokenError, ValueError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    if token is not None and args.insecure_rest:
        print("error: --insecure-rest with a token configured: choose one",
              file=sys.stderr)
        return 2
    os.environ["VGUARD_NETWORK"] = os.path.abspath(args.network)
    os.environ["VGUARD_STATE_FILE"] = state_file
    for name in ("VGUARD_TOKEN_FILE", "VGUARD_ALERT_TOKEN_FILE", "VGUARD_EVE_FILE",
                 "VGUARD_INSECURE_REST"):
        os.environ.pop(name, None)
    if args.token_file:
        os.environ["VGUARD_TOKEN_FILE"] = os.path.abspath(args.token_file)
    if args.alert_token_file:
        os.environ["VGUARD_ALERT_TOKEN_FILE"] = os.path.abspath(args.alert_token_file)
    if args.eve_file:
        os.environ["VGUARD_EVE_FILE"] = os.path.abspath(args.eve_file)
    if args.insecure_rest:
        os.environ["VGUARD_INSECURE_REST"] = "1"
    os.environ.update(flow_settings)
    if args.ofp_host not in ("127.0.0.1", "::1", "localhost") and \
            not any(a.startswith("--ctl-privkey") for a in ryu_args):
        unguarded = [hv.name for hv in network.hypervisors if not hv.connect_from]
        print(f"*** WARNING: OpenFlow over plain TCP on {args.ofp_host}:{args.ofp_port}: "
              "anyone who reaches it can claim a hypervisor's datapath id before its "
              "bridge does, and read its whole policy. Use TLS with a certificate per "
              "switch (--ca-certs, --ctl-privkey, --ctl-cert, --ofp-ssl-listen-port)"
              + (f"; hypervisors without connect_from: {', '.join(unguarded)}"
                 if unguarded else "") + " ***", file=sys.stderr)
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


def _flow_settings(args, state_file: str) -> dict:
    """The flow collector's settings, checked, as the app's environment."""
    if args.flow_collector != "off":
        parse_address(args.flow_collector)
    if not (args.flow_log_max_mb > 0 and args.flow_log_retention > 0 and
            args.flow_intake > 0):
        raise ValueError("--flow-log-max-mb, --flow-log-retention and --flow-intake "
                         "must be positive")
    base = os.path.splitext(state_file)[0].removesuffix(".policy")
    log = args.flow_log or base + ".flows.jsonl"
    return {"VGUARD_FLOW_TEMPLATES": base + ".ipfix-templates.json","VGUARD_FLOW_COLLECTOR": args.flow_collector,
            "VGUARD_FLOW_LOG": log if log == "off" else os.path.abspath(log),
            "VGUARD_FLOW_LOG_MAX_BYTES": str(int(args.flow_log_max_mb * 1024 * 1024)),
            "VGUARD_FLOW_LOG_RETENTION": str(args.flow_log_retention),
            "VGUARD_FLOW_INTAKE": str(args.flow_intake)}


if __name__ == "__main__":
    sys.exit(main())
