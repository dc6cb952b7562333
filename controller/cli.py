"""Command line for the controller's REST API: `python -m controller.cli`.

    python -m controller.cli matrix
    python -m controller.cli set pair dmz internal allow
    python -m controller.cli quarantine web2
    python -m controller.cli events --source response
    python -m controller.cli release web2      # the operator's rule and the IDS's actions

Talks to --url (default $VGUARD_URL or http://127.0.0.1:8080) with the token
from --token or $VGUARD_API_TOKEN for writes. Exits 0 on success, 1 when the
controller refuses or fails a change, 2 on a usage error, 3 when it cannot
be reached.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import time
import urllib.error
import urllib.parse
import urllib.request

from .auth import TOKEN_ENV

DEFAULT_URL = "http://127.0.0.1:8080"
TIMEOUT = 30.0     # a commit is confirmed within seconds; an audit waits 5 s at most


class CliError(Exception):
    def __init__(self, message: str, code: int = 1):
        self.code = code
        super().__init__(message)


class Client:
    def __init__(self, url: str, token: str | None):
        self.url, self.token = url.rstrip("/"), token
        # The API is usually on this host or a management network: no proxy.
        self.opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))

    def call(self, method: str, path: str, body: dict | None = None):
        headers = {"Accept": "application/json"}
        data = None
        if body is not None:
            data = json.dumps(body).encode()
            headers["Content-Type"] = "application/json"
        if self.token and method != "GET":
            headers["Authorization"] = f"Bearer {self.token}"
        request = urllib.request.Request(self.url + path, data=data, headers=headers,
                                         method=method)
        try:
            with self.opener.open(request, timeout=TIMEOUT) as r:
                return json.load(r)
        except urllib.error.HTTPError as e:
            hint = f" (give --token or set {TOKEN_ENV})" if e.code == 401 and \
                not self.token else ""
            raise CliError(f"{method} {path}: {e.code} {e.reason}: {_error_text(e)}{hint}") \
                from None
        except (urllib.error.URLError, OSError) as e:
            reason = getattr(e, "reason", e)
            raise CliError(f"cannot reach the controller at {self.url}: {reason}", 3) \
                from None
        except ValueError:
            raise CliError(f"{method} {path}: the answer is not JSON") from None


def _error_text(e: urllib.error.HTTPError) -> str:
    try:
        doc = json.load(e)
    except ValueError:
        return "(no details)"
    if "failed" in doc and doc.get("failed"):
        failed = ", ".join(f"{hv}: {why}" for hv, why in sorted(doc["failed"].items()))
        return f"{doc.get('error', '')} [failed on {failed}]"
    return doc.get("error", json.dumps(doc))


def table(headers: list[str], rows: list[list]) -> str:
    """Columns aligned to their widest cell."""
    cells = [[str("-" if c is None else c) for c in row] for row in [headers] + rows]
    widths = [max(len(row[i]) for row in cells) for i in range(len(headers))]
    lines = ["  ".join(c.ljust(w) for c, w in zip(row, widths)).rstrip() for row in cells]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(lines)


# ------------------------------------------------------------ commands

def cmd_trace(client, args) -> str:
    query = {"src": args.src, "dst": args.dst, "proto": args.proto}
    if args.dport is not None:
        query["dport"] = str(args.dport)
    doc = client.call("GET", "/api/v1/trace?" + urllib.parse.urlencode(query))
    rule = doc["rule"]
    lines = [f"{doc['verdict']}: {doc['explanation']}"]
    if rule:
        lines.append(f"rule: table {rule['table']}, priority {rule['priority']}, "
                     f"{rule['reason']} ({rule['cookie']})")
    lines += [f"copy to the IDS at {c['hypervisor']} port {c['port']}" for c in doc["copies"]]
    lines += [f"through the firewall of {hv}" for hv in doc["steered"]]
    for hop in doc["path"]:
        outs = ", ".join(f"{o['to']} (port {o['port']}"
                         + (f", VLAN {o['vlan'][0]})" if o["vlan"] else ")")
                         for o in hop["outputs"]) or "nowhere"
        lines.append(f"  {hop['hypervisor']}, in by {hop['in']} (port {hop['in_port']}): "
                     + " -> ".join(f"{e['table']}/{e['reason']}" for e in hop["entries"])
                     + f" -> {outs}")
    lines += [f"note: {hv} {note}" for hv, note in sorted(doc["hypervisors"].items())
              if note != "in sync"]
    return "\n".join(lines)


def cmd_matrix(client, args) -> str:
    doc = client.call("GET", "/api/v1/matrix")
    names = doc["segments"]
    rows = [[src] + [doc["modes"][src][dst] for dst in names] for src in names]
    return table(["from \\ to"] + names, rows)


def cmd_vms(client, args) -> str:
    vms = client.call("GET", "/api/v1/vms")
    return table(["VM", "bound by", "up", "hypervisor", "port", "segment", "MAC", "IP",
                  "mode", "direction", "segment mode", "effective"],
                 [[v["name"], v["binding"]["by"], "up" if v["binding"]["up"] else "down",
                   v["hypervisor"], v["port"], v["segment"], v["mac"], v["ip"],
                   v["mode"], v["direction"], v["segment_mode"], v["effective"]]
                  for v in vms])


def cmd_policy(client, args) -> str:
    doc = client.call("GET", "/api/v1/policy")
    p = doc["policy"]
    rows = [["default", "inside every segment", p["default"]]]
    rows += [["segment", name, mode] for name, mode in sorted(p["segments"].items())]
    rows += [["pair", " <-> ".join(r["segments"]), r["mode"]] for r in p["pairs"]]
    rows += [["external", f"{name} <-> its gateways", mode]
             for name, mode in sorted(p.get("external", {}).items())]
    rows += [["vm", name, r["mode"] + (f" ({r['direction']})" if r["mode"] == "mirror"
                                       or r["direction"] != "both" else "")]
             for name, r in sorted(p["vms"].items())]
    out = table(["scope", "name", "mode"], rows)
    if p.get("mirror_denied"):
        out += "\ndenied traffic is mirrored too"
    return out + f"\nstate file: {doc['state_file'] or '(none)'}"


def _applied(doc: dict) -> str:
    if not doc.get("changed"):
        return "no change: the policy was already so"
    where = ", ".join(doc["applied_to"]) or "no hypervisor connected"
    out = f"applied in {doc['seconds']:.3f} s on: {where}"
    if doc.get("offline"):
        out += f"\noffline (get it when they connect): {', '.join(doc['offline'])}"
    if doc.get("pending"):
        # Not in force where it matters: say so in the exit status too.
        raise CliError(f"{out}\nWARNING: {doc['warning']}", 4)
    return out


def cmd_set(client, args) -> str:
    if args.scope == "default":
        path, (mode,) = "/api/v1/policy/default", _take(args.rest, 1, "set default MODE")
    elif args.scope in ("segment", "external"):
        name, mode = _take(args.rest, 2, f"set {args.scope} NAME MODE")
        kind = "segments" if args.scope == "segment" else "external"
        path = f"/api/v1/policy/{kind}/{_quote(name)}"
    else:
        a, b, mode = _take(args.rest, 3, "set pair A B MODE")
        path = f"/api/v1/policy/pairs/{_quote(a)}/{_quote(b)}"
    return _applied(client.call("PUT", path, {"mode": mode}))


def _take(values: list[str], count: int, usage: str) -> list[str]:
    if len(values) != count:
        raise CliError(f"usage: {usage}", 2)
    return values


def _quote(name: str) -> str:
    return urllib.parse.quote(name, safe="")


VM_FIELDS = ("segment", "mac", "ip", "hypervisor", "port", "interface", "iface_id")


def cmd_vm(client, args) -> str:
    """vm NAME MODE | vm add NAME --segment S --mac M --ip A (--interface I |
    --iface-id ID | --hypervisor H --port P) | vm remove NAME"""
    words = args.words
    if len(words) == 2 and words[0] == "add":
        body = {k: getattr(args, k) for k in VM_FIELDS if getattr(args, k) is not None}
        return _changed(client.call("PUT", f"/api/v1/vms/{_quote(words[1])}", body))
    if len(words) == 2 and words[0] == "remove":
        return _changed(client.call("DELETE", f"/api/v1/vms/{_quote(words[1])}"))
    name, mode = _take(words, 2, "vm NAME MODE | vm add NAME ... | vm remove NAME")
    body = {"mode": mode}
    if args.direction:
        body["direction"] = args.direction
    return _applied(client.call("PUT", f"/api/v1/policy/vms/{_quote(name)}", body))


def _changed(doc: dict) -> str:
    if not doc.get("changed"):
        return "no change: the network was already so"
    return _applied(doc)


def cmd_reload(client, args) -> str:
    return _changed(client.call("POST", "/api/v1/reload"))


def cmd_events(client, args) -> str:
    query = f"?source={args.source}" if args.source else ""
    events = client.call("GET", f"/api/v1/events{query}")["events"]
    return table(["time", "level", "kind", "VM", "hypervisor", "detail"],
                 [[time.strftime("%H:%M:%S", time.localtime(e["time"])), e["level"],
                   e["kind"], e["vm"] or "", e["hypervisor"], e["detail"]]
                  for e in events[-args.last:]])


def cmd_quarantine(client, args) -> str:
    return _applied(client.call("PUT", f"/api/v1/policy/vms/{_quote(args.name)}",
                                {"mode": "quarantine"}))


def cmd_release(client, args) -> str:
    """The VM back to its segment's policy: the IDS's automatic actions on
    it released, and the operator's own rule for it, if it has one."""
    name = _quote(args.name)
    automatic = [a for a in client.call("GET", "/api/v1/response")["active"]
                 if a["vm"] == args.name]
    lines = []
    if automatic:
        doc = client.call("DELETE", f"/api/v1/response/actions/{name}")
        lines.append("released from the IDS's automatic "
                     + " and ".join(e["action"] for e in doc["released"]))
    if automatic and args.name not in client.call("GET", "/api/v1/policy")["policy"]["vms"]:
        return lines[0]
    try:
        lines.append(_applied(client.call("DELETE", f"/api/v1/policy/vms/{name}")))
    except CliError as e:
        raise CliError("\n".join(lines + [str(e)]), e.code) from None
    return "\n".join(lines)


def cmd_response(client, args) -> str:
    doc = client.call("GET", "/api/v1/response")
    rules = doc["response"]
    rows = []
    for i, r in enumerate(rules["rules"]):
        when = "; ".join(f"{k} {', '.join(map(str, r[k]))}"
                         for k in ("severity", "signature_id", "category") if k in r)
        rows.append([i, when, r["target"], r["action"],
                     f"{r['ttl']:g} s" if "ttl" in r else "until released"])
    out = [table(["rule", "alerts with", "on", "action", "for"], rows) if rows
           else "no response rules: alerts act on nothing",
           f"allowlist: {', '.join(rules['allowlist']) or '-'}; at most "
           f"{rules['max_per_minute']} new actions a minute "
           f"({doc['new_actions_last_minute']} in the last one)"]
    active = [[a["vm"], a["action"], a["rule"],
               time.strftime("%H:%M:%S", time.localtime(a["since"])),
               "-" if a["expires"] is None else
               time.strftime("%H:%M:%S", time.localtime(a["expires"])),
               f"{a['alert']['signature_id']} {a['alert']['signature']}"]
              for a in doc["active"]]
    out.append(table(["VM", "action", "rule", "since", "until", "alert"], active)
               if active else "no automatic action in force")
    counts = ", ".join(f"{k} {v}" for k, v in doc["counts"].items()) or "none yet"
    out.append(f"alerts so far: {counts}; records ignored: "
               f"{doc['intake']['ignored_records']}")
    return "\n".join(out)


def cmd_audit(client, args) -> str:
    doc = client.call("GET", "/api/v1/audit")
    lines = []
    for name, hv in sorted(doc["hypervisors"].items()):
        if not hv["answered"]:
            lines.append(f"{name}: no answer ({hv.get('error')})")
            continue
        state = "in sync" if hv["in_sync"] else "DIFFERS"
        lines.append(f"{name}: {state}: {hv['intended']} intended, {hv['installed']} "
                     "installed")
        for kind in ("missing", "unexpected"):
            for e in hv[kind]:
                match = ",".join(f"{k}={v}" for k, v in sorted(e["match"].items()))
                lines.append(f"  {kind:10} {e['cookie']} table={e['table']} "
                             f"priority={e['priority']} {match or '*'} "
                             f"{e['reason'] or ''}".rstrip())
    for name in doc["offline"]:
        lines.append(f"{name}: offline")
    if not doc["in_sync"]:
        print("\n".join(lines))
        raise CliError("audit: the switches differ from the intent")
    return "\n".join(lines)


def cmd_counters(client, args) -> str:
    doc = client.call("GET", "/api/v1/counters")
    rows = []
    for name, hv in sorted(doc["hypervisors"].items()):
        rows.append([name, "mirrored to IDS", hv["mirrored"]["packets"],
                     hv["mirrored"]["bytes"]])
        for reason, t in sorted(hv["dropped"].items()):
            rows.append([name, f"dropped: {reason}", t["packets"], t["bytes"]])
    return table(["hypervisor", "what", "packets", "bytes"], rows)


def cmd_status(client, args) -> str:
    hvs = client.call("GET", "/api/v1/hypervisors")
    health = client.call("GET", "/api/v1/health")
    rows = [[h["name"], h["dpid"], "yes" if h["connected"] else "no",
             "yes" if h["synced"] else "no", h["flows"],
             ", ".join(f"{p['port']} ({p['role']})" for p in h["ports_down"]) or "-"]
            for h in hvs]
    out = table(["hypervisor", "dpid", "connected", "synced", "flows", "ports down"], rows)
    return (f"{out}\nready: {'yes' if health['ready'] else 'no'}; learned hosts: "
            f"{len(health['learned_hosts'])}; packet-ins: {health['packet_ins']}")


def parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(prog="python -m controller.cli",
                                 description="Read and change the controller's policy "
                                             "through its REST API.")
    ap.add_argument("--url", default=os.environ.get("VGUARD_URL", DEFAULT_URL),
                    help=f"the REST API (default $VGUARD_URL or {DEFAULT_URL})")
    ap.add_argument("--token", default=os.environ.get(TOKEN_ENV),
                    help=f"bearer token for changes (default ${TOKEN_ENV})")
    sub = ap.add_subparsers(dest="command", required=True)
    sub.add_parser("matrix", help="the mode for every segment pair").set_defaults(
        run=cmd_matrix)
    sub.add_parser("vms", help="VMs and their modes").set_defaults(run=cmd_vms)
    sub.add_parser("policy", help="the policy in force").set_defaults(run=cmd_policy)
    s = sub.add_parser("trace", help="what the network does with a frame from SRC to DST "
                                     "(a VM, an IPv4 address or a MAC), and why")
    s.add_argument("src")
    s.add_argument("dst")
    s.add_argument("--proto", default="icmp", choices=("icmp", "tcp", "udp", "arp"))
    s.add_argument("--dport", type=int)
    s.set_defaults(run=cmd_trace)
    s = sub.add_parser("set", help="set default MODE | segment NAME MODE | "
                                   "pair A B MODE | external SEGMENT MODE (with its "
                                   "gateways)")
    s.add_argument("scope", choices=("default", "segment", "pair", "external"))
    s.add_argument("rest", nargs="+", metavar="ARG")
    s.set_defaults(run=cmd_set)
    s = sub.add_parser("vm", help="vm NAME MODE: a VM's own mode | vm add NAME ...: "
                                  "create or replace a VM | vm remove NAME")
    s.add_argument("words", nargs="+", metavar="WORD")
    s.add_argument("--direction", help="for mirror: both, sent or received")
    for field in VM_FIELDS:
        s.add_argument(f"--{field.replace('_', '-')}", dest=field,
                       type=int if field == "port" else str,
                       help="with vm add: as in the network file's vms: section")
    s.set_defaults(run=cmd_vm)
    sub.add_parser("reload", help="read the network file again, apply the difference"
                   ).set_defaults(run=cmd_reload)
    s = sub.add_parser("events", help="recent lifecycle events (VMs up, down, moved) and "
                                      "the IDS response's trail")
    s.add_argument("--last", type=int, default=50, help="how many (default 50)")
    s.add_argument("--source", choices=("lifecycle", "response"), help="only these")
    s.set_defaults(run=cmd_events)
    for name, run, what in (("quarantine", cmd_quarantine, "cut a VM off entirely"),
                            ("release", cmd_release, "a VM back to its segment's policy "
                                                     "(the IDS's actions on it too)")):
        s = sub.add_parser(name, help=what)
        s.add_argument("name")
        s.set_defaults(run=run)
    sub.add_parser("response", help="the IDS response rules and the actions in force"
                   ).set_defaults(run=cmd_response)
    sub.add_parser("audit", help="intended flows vs what the switches hold (exit 1 "
                                 "if they differ)").set_defaults(run=cmd_audit)
    sub.add_parser("counters", help="mirrored and dropped traffic").set_defaults(
        run=cmd_counters)
    sub.add_parser("status", help="hypervisors: connected, in sync, flows").set_defaults(
        run=cmd_status)
    return ap


def main(argv=None) -> int:
    args = parser().parse_args(argv)
    try:
        print(args.run(Client(args.url, args.token), args))
        return 0
    except CliError as e:
        # 4: applied, but not in force everywhere: not an error of the command.
        print(str(e) if e.code == 4 else f"error: {e}", file=sys.stderr)
        return e.code


if __name__ == "__main__":
    sys.exit(main())
