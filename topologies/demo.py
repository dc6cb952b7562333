"""The demo: the consolidation problem, then the controller fixing it.

    python -m topologies.demo [NETWORK_FILE]

Brings the lab up twice from the same file: once behind a vSwitch that
floods like a hub (the problem), once under the controller. Every number
printed is measured in this run; the exit status is non-zero if any
expected property does not hold.
"""
from __future__ import annotations

import ipaddress
import json
import os
import secrets
import sys
import tempfile
import time
import urllib.request
from itertools import permutations

import yaml
from mininet.log import setLogLevel

from controller import model
from topologies import dhcptools, firewall, ids_detector, probes, remote_ids, router
from topologies.lab import CENTRAL_IDS, Lab

MAC_FLOOD_SECONDS = 10


class Report:
    def __init__(self):
        self.failures = []

    def section(self, title: str) -> None:
        print(f"\n== {title}")

    def line(self, text: str) -> None:
        print(f"   {text}")

    def check(self, ok: bool, text: str, expected: str = "") -> None:
        mark = "ok  " if ok else "FAIL"
        print(f"   [{mark}] {text}" + ("" if ok or not expected else f"  (expected {expected})"))
        if not ok:
            self.failures.append(text)


def pick_roles(net: model.Network):
    """An attacker VM that shares its segment with two VMs on different hypervisors."""
    for attacker in net.vms:
        peers = [v for v in net.vms if v.segment == attacker.segment and v is not attacker]
        for a, b in permutations(peers, 2):
            if a.hypervisor == attacker.hypervisor and b.hypervisor != a.hypervisor:
                return attacker, a, b
    raise SystemExit(f"{net.source}: the demo needs a segment with two VMs on one "
                     "hypervisor and one on another")


def segment_matrix(lab: Lab, report: Report, isolated: bool) -> None:
    net = lab.network
    got = probes.reachability({v.name: lab.host(v.name) for v in net.vms},
                              {v.name: str(v.ip) for v in net.vms})
    seg = {v.name: v.segment for v in net.vms}
    names = [s.name for s in net.segments]
    width = max(len(n) for n in names) + 2
    report.line("pairs answering a ping, by source row / destination column segment:")
    report.line(" " * width + "".join(n.rjust(width + 4) for n in names))
    for src in names:
        cells = []
        for dst in names:
            pairs = [ok for (a, b), ok in got.items() if seg[a] == src and seg[b] == dst]
            cells.append(f"{sum(pairs)}/{len(pairs)}".rjust(width + 4))
        report.line(src.ljust(width) + "".join(cells))
    same = [ok for (a, b), ok in got.items() if seg[a] == seg[b]]
    cross = [ok for (a, b), ok in got.items() if seg[a] != seg[b]]
    report.check(all(same), f"same-segment pairs reach each other: {sum(same)}/{len(same)}")
    if isolated:
        report.check(not any(cross), f"cross-segment pairs that reach: {sum(cross)}/"
                                     f"{len(cross)}", "0")
    else:
        report.line(f"cross-segment pairs that reach: {sum(cross)}/{len(cross)}")


def sniff(lab: Lab, attacker, a, b, flood: bool, pings: int = 20):
    """Frames the attacker receives that were meant for others, while a pings b."""
    # Naming the victims keeps macof's own outgoing flood out of the capture.
    victim_traffic = (f"not ether dst {attacker.mac} and not ether multicast and "
                      f"(ether host {a.mac} or ether host {b.mac})")
    floods = [probes.flood_macs(lab.host(attacker.name), MAC_FLOOD_SECONDS)] if flood else []
    interval = MAC_FLOOD_SECONDS / pings if flood else 0.1
    with probes.capture(lab.host(attacker.name), victim_traffic) as cap:
        sent, received = probes.ping(lab.host(a.name), str(b.ip), count=pings,
                                     interval=interval)
        for f in floods:
            f.wait(timeout=MAC_FLOOD_SECONDS + 20)
    leaked = cap.count(f"ether host {a.mac} or ether host {b.mac}")
    cap.close()
    return leaked, sent, received


def spoofing(lab: Lab, report: Report, attacker, a, b) -> None:
    host = lab.host(attacker.name)
    cases = [
        ("forged source MAC", "ipv4", dict(src_mac=a.mac, src_ip=attacker.ip)),
        ("forged source IP", "ipv4", dict(src_mac=attacker.mac, src_ip=a.ip)),
        ("ARP claiming a neighbour's IP", "arp", dict(src_mac=attacker.mac, src_ip=a.ip)),
        ("802.1Q-tagged frame", "tagged", dict(src_mac=attacker.mac, src_ip=attacker.ip)),
        ("double-tagged (VLAN hopping)", "double", dict(src_mac=attacker.mac,
                                                        src_ip=attacker.ip)),
        ("honest frame (control)", "ipv4", dict(src_mac=attacker.mac, src_ip=attacker.ip)),
    ]
    report.line(f"{attacker.name} sends 5 frames of each kind to {b.name}:")
    for label, kind, fields in cases:
        # Count the crafted frames only, tagged or not, by what is in them:
        # the probe payload, or the forged sender of the ARP. (b's ARP for
        # the attacker, to answer with an ICMP error, brings a genuine ARP
        # reply that a filter on "arp" would count.)
        marker = (_mac(fields["src_mac"]) + ipaddress.ip_address(fields["src_ip"]).packed
                  if kind == "arp" else probes.CRAFTED_PAYLOAD)
        with probes.capture(lab.host(b.name), f"not ether src {b.mac}") as cap:
            probes.craft(host, kind, count=5, dst_mac=b.mac, dst_ip=b.ip, **fields)
        got = sum(marker in frame for frame in cap.frames())
        cap.close()
        want = 5 if "control" in label else 0
        report.check(got == want, f"{label:32s} delivered {got}/5", str(want))


def _mac(text: str) -> bytes:
    return bytes.fromhex(text.replace(":", ""))


class Api:
    """Policy writes through the controller's REST API, with a bearer token."""

    def __init__(self, lab: Lab, token: str):
        self.lab, self.token = lab, token

    def set_default(self, mode: str) -> dict:
        return self.put("/api/v1/policy/default", mode)[1]

    def put(self, path: str, mode: str) -> tuple[int, dict]:
        """PUT {"mode": mode}; (status, answer) once the datapath has it."""
        request = urllib.request.Request(
            f"{self.lab.rest_url}{path}", method="PUT",
            data=json.dumps({"mode": mode}).encode(),
            headers={"Authorization": f"Bearer {self.token}",
                     "Content-Type": "application/json"})
        opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
        with opener.open(request, timeout=30) as response:
            answer = json.load(response)
            status = response.status
        self.lab.wait_datapath()     # what the probes then see is the new mode
        return status, answer


def ids_sensors(lab: Lab) -> list[str]:
    net = lab.network
    names = [f"{hv.name}ids" for hv in net.hypervisors if hv.ids_port is not None]
    if net.mirror_vlan is not None and any(hv.uplink_port for hv in net.hypervisors):
        names.append("ids")
    return names


def conversations(lab: Lab, pairs, count: int) -> tuple[int, int]:
    """Ping each (a, b) pair `count` times: (echo packets sent both ways, answered)."""
    sent = answered = 0
    for a, b in pairs:
        s, r = probes.ping(lab.host(a.name), str(b.ip), count=count)
        sent, answered = sent + 2 * s, answered + 2 * r
    return sent, answered


def blind_spot(lab: Lab, api: Api, report: Report, pairs) -> None:
    sensors = ids_sensors(lab)
    macs = " or ".join(f"ether src {vm.mac}" for pair in pairs for vm in pair)
    bpf = f"icmp and ({macs})"
    for mode in ("allow", "mirror"):
        if mode == "mirror":
            result = api.set_default("mirror")
            report.check(result.get("ok") is True,
                         f"REST: default mode -> mirror, confirmed by "
                         f"{', '.join(result.get('applied_to', []))} in "
                         f"{1000 * result.get('seconds', 0):.0f} ms")
        caps = {n: probes.Capture(lab.host(n), bpf).start() for n in sensors}
        packets, answered = conversations(lab, pairs, 10)
        for cap in caps.values():
            cap.stop()
        seen = {n: cap.count() for n, cap in caps.items()}
        for cap in caps.values():
            cap.close()
        detail = ", ".join(f"{n} {c}" for n, c in seen.items())
        if mode == "allow":
            report.check(sum(seen.values()) == 0,
                         f"without mirroring the IDS sees {sum(seen.values())} of {packets} "
                         f"inter-VM packets ({detail})", "0: the blind spot")
        else:
            report.check(sum(seen.values()) == packets == answered,
                         f"with mirroring the IDS sees {sum(seen.values())} of {packets} "
                         f"inter-VM packets, each once ({detail})", f"{packets}")


def steering(lab: Lab, api: Api, report: Report, attacker, a, b) -> None:
    fw = lab.host(firewall.HOST)
    result = api.set_default("steer")
    report.check(result.get("ok") is True,
                 f"REST: default mode -> steer, confirmed in "
                 f"{1000 * result.get('seconds', 0):.0f} ms")
    firewall.rules(fw, *(f'ip saddr {x.ip} ip daddr {y.ip} counter comment "{x.name}->{y.name}"'
                         for x, y in ((attacker, a), (a, attacker), (a, b), (b, a))))
    packets, answered = conversations(lab, [(attacker, a), (a, b)], 5)
    counts = {k: v for k, v in firewall.counters(fw).items() if "->" in k}
    report.check(answered == packets and sum(counts.values()) == packets,
                 f"the firewall counted {sum(counts.values())} of {packets} inter-VM packets "
                 f"({', '.join(f'{k} {v}' for k, v in counts.items())}); "
                 f"{answered}/{packets} delivered", f"{packets}")
    firewall.rules(fw, f'ip saddr {attacker.ip} ip daddr {a.ip} counter drop '
                       f'comment "drop {attacker.name}->{a.name}"')
    blocked = probes.ping(lab.host(attacker.name), str(a.ip), count=3)[1]
    other = probes.ping(lab.host(a.name), str(b.ip), count=3)[1]
    report.check(blocked == 0 and other == 3,
                 f"a firewall drop rule stops {attacker.name}->{a.name} ({blocked}/3) while "
                 f"{a.name}->{b.name} flows ({other}/3)")
    firewall.rules(fw)
    hv = attacker.hypervisor
    fw.cmd(f"ip link set {firewall.bridge_of(lab.network, hv)} down")
    down = probes.wait_for(lambda: lab.status()["datapaths"][hv]["firewall"] == "down")
    lab.wait_datapath()
    fail = lab.network.steering.fail
    got = probes.ping(lab.host(attacker.name), str(a.ip), count=3)[1]
    want = 0 if fail == "closed" else 3
    report.check(down and got == want, f"firewall of {hv} taken down: detected, steered "
                                       f"traffic fails {fail} ({got}/3 delivered)")
    fw.cmd(f"ip link set {firewall.bridge_of(lab.network, hv)} up")
    up = probes.wait_for(lambda: lab.status()["datapaths"][hv]["firewall"] == "up")
    lab.wait_datapath()
    back = probes.ping(lab.host(attacker.name), str(a.ip), count=1)[1] == 1
    report.check(up and back, "firewall back: steering resumes by itself")
    api.set_default("allow")


def bound_variant(path: str, vm: model.VM) -> str:
    """The same network file with `vm` bound by interface name instead of
    its hypervisor and port (a temporary copy)."""
    doc = model.read_document(path)
    body = dict(doc["vms"][vm.name])
    body.pop("hypervisor")
    body.pop("port")
    doc["vms"][vm.name] = {"interface": f"{vm.name}-tap"[:15], **body}
    out = os.path.join(tempfile.mkdtemp(prefix="demo-bound-"), os.path.basename(path))
    with open(out, "w") as f:
        yaml.safe_dump(doc, f, sort_keys=False)
    return out


def migration(path: str, report: Report, token_file: str, token: str, mover, peer,
              outsider) -> None:
    """`mover`, bound by interface, migrates to another hypervisor under a
    10 ms ping from `peer`; isolation and mirroring hold at the destination."""
    net = model.load(path)
    target = next(hv for hv in net.hypervisors
                  if hv.name != mover.hypervisor and hv.uplink_port is not None)
    with Lab(bound_variant(path, mover), placement={mover.name: mover.hypervisor},
             controller_args=["--token-file", token_file]) as lab:
        lab.pin_neighbours()
        stream = probes.PingStream(lab.host(peer.name), str(mover.ip))
        time.sleep(1)
        started = time.time()
        lab.migrate(mover.name, target.name)
        time.sleep(1)
        replies = stream.stop().replies
        before = [r for r in replies if r[0] < started]
        after = [r for r in replies if r[0] >= started]
        lost = after[0][1] - before[-1][1] - 1 if before and after else None
        where = next(v for v in lab.api("/api/v1/vms") if v["name"] == mover.name)
        report.check(bool(after) and where["hypervisor"] == target.name,
                     f"{mover.name} migrated {mover.hypervisor} -> {target.name} (ofport "
                     f"{where['port']}) under a 10 ms ping from {peer.name}: first reply "
                     f"{(after[0][0] - started) * 1000 if after else -1:.0f} ms after the "
                     f"move began, {lost} pings lost")
        isolated = not probes.reaches(lab.host(mover.name), str(outsider.ip))
        report.check(isolated, f"at {target.name} it still cannot reach {outsider.name} "
                               f"(segment {outsider.segment})")
        Api(lab, token).set_default("mirror")
        sensors = ids_sensors(lab)
        bpf = f"icmp and ether src {mover.mac}"
        caps = {n: probes.Capture(lab.host(n), bpf).start() for n in sensors}
        sent, _ = probes.ping(lab.host(peer.name), str(mover.ip), count=5)
        for cap in caps.values():
            cap.stop()
        seen = {n: cap.count() for n, cap in caps.items()}
        for cap in caps.values():
            cap.close()
        report.check(sum(seen.values()) == sent,
                     f"mirroring follows it: its {sent} replies copied once "
                     f"({', '.join(f'{n} {c}' for n, c in seen.items() if c)})", f"{sent}")


ERSPAN_IDS = "198.18.100.10"     # the demo's central IDS: the benchmarking range


def erspan_variant(path: str) -> str:
    """The same network with no hypervisor IDS port: every hypervisor copies
    to the central IDS in ERSPAN, on a port number no hypervisor uses."""
    doc = model.read_document(path)
    net = model.load(path)
    used = {vm.port for vm in net.vms if vm.port} | {
        p for hv in net.hypervisors for p in hv.special_ports()} | {
        lp.port for hv in net.hypervisors for lp in hv.learning_ports}
    for body in doc["hypervisors"].values():
        body.pop("ids_port", None)
    doc["mirror"] = {"erspan": {"remote_ip": ERSPAN_IDS, "port": max(used) + 1,
                                "session": 1}}
    out = os.path.join(tempfile.mkdtemp(prefix="demo-erspan-"), os.path.basename(path))
    with open(out, "w") as f:
        yaml.safe_dump(doc, f, sort_keys=False)
    return out


def remote_mirror(path: str, report: Report, token_file: str, token: str, a, b) -> None:
    """a and b, on two hypervisors with no IDS port, ping each other under
    mirroring: the central IDS gets each frame once, in ERSPAN, unchanged."""
    with Lab(erspan_variant(path), controller_args=["--token-file", token_file]) as lab:
        Api(lab, token).set_default("mirror")
        for x, y in ((a, b), (b, a)):             # ARP settled before counting
            probes.ping(lab.host(x.name), str(y.ip), count=1)
        caps = {vm.name: probes.Capture(lab.host(vm.name), "icmp").start() for vm in (a, b)}
        ids = probes.Capture(lab.host(CENTRAL_IDS), "ip proto 47").start()
        sent = sum(probes.ping(lab.host(x.name), str(y.ip), count=10)[0]
                   for x, y in ((a, b), (b, a)))
        received = [f for cap in caps.values() for f in cap.frames()]
        copies = [remote_ids.decapsulate(f) for f in ids.frames()]
        for cap in [*caps.values(), ids]:
            cap.close()
        inner = sorted(remote_ids.icmp_only(c[1] for c in copies if c is not None))
        report.check(len(received) == 2 * sent and inner == sorted(received),
                     f"{a.name} ({a.hypervisor}) <-> {b.name} ({b.hypervisor}), no IDS port "
                     f"on either: the central IDS got {len(inner)} ERSPAN copies of the "
                     f"{len(received)} frames delivered, each once and byte for byte",
                     f"{len(received)}")


def gateway_variant(path: str) -> tuple[str, list[str]] | None:
    """The same network with a gateway (the lab's router) on every segment
    whose VMs share one /24, that /24 as its subnet, and the last of those
    segments cut from it (policy.external: deny). None if no segment fits.
    Returns (the file, the segments given a gateway)."""
    doc = model.read_document(path)
    net = model.load(path)
    routed = []
    for i, seg in enumerate(net.segments):
        nets = {ipaddress.ip_network(f"{vm.ip}/24", strict=False)
                for vm in net.vms if vm.segment == seg.name}
        if len(nets) != 1 or seg.gateways:
            continue
        subnet = nets.pop()
        taken = {vm.ip for vm in net.vms}
        address = next(ip for ip in reversed(list(subnet.hosts())) if ip not in taken)
        doc["segments"][seg.name].update(
            subnet=str(subnet), gateways=[{"mac": f"02:00:5e:00:fe:{i + 1:02x}",
                                           "ip": str(address)}])
        routed.append(seg.name)
    if len(routed) < 2:
        return None
    policy = doc.setdefault("policy", {}) or {}
    policy["external"] = {routed[-1]: "deny"}
    doc["policy"] = policy
    out = os.path.join(tempfile.mkdtemp(prefix="demo-gw-"), os.path.basename(path))
    with open(out, "w") as f:
        yaml.safe_dump(doc, f, sort_keys=False)
    return out, routed


def way_out(variant: tuple[str, list[str]], report: Report, token_file: str,
            token: str) -> None:
    """Every segment with a gateway reaches the host behind the router but
    the one whose external mode is deny; switched at run time by REST."""
    path, routed = variant
    with Lab(path, controller_args=["--token-file", token_file]) as lab:
        net = lab.network
        first = {seg: next(vm for vm in net.vms if vm.segment == seg) for seg in routed}

        def outside(seg):
            return probes.reaches(lab.host(first[seg].name), router.OUTSIDE_IP)

        reached = {seg: outside(seg) for seg in routed}
        cut = routed[-1]
        report.check(all(reached[s] for s in routed[:-1]) and not reached[cut],
                     f"through their gateway (the lab's router) to {router.OUTSIDE_IP}: "
                     + ", ".join(f"{first[s].name} ({s}) "
                                 f"{'reaches' if reached[s] else 'does not'}"
                                 for s in routed) + f"; {cut}'s external mode is deny")
        status, _ = Api(lab, token).put(f"/api/v1/policy/external/{routed[0]}", "deny")
        now = outside(routed[0])
        report.check(status == 200 and not now,
                     f"REST: external {routed[0]} -> deny: {first[routed[0]].name} "
                     f"{'still reaches' if now else 'no longer reaches'} it")


def dhcp_variant(path: str, server, client, attacker) -> str:
    """The same network with `server` a declared DHCP server and `client`
    taking its address by DHCP (ip: dhcp); the client and the attacker
    have IPv6 (their link-local addresses)."""
    doc = model.read_document(path)
    doc["vms"][server.name]["dhcp_server"] = True
    doc["vms"][client.name]["ip"] = "dhcp"
    for vm in (client, attacker):
        doc["vms"][vm.name].setdefault("ipv6", [])
    out = os.path.join(tempfile.mkdtemp(prefix="demo-dhcp-"), os.path.basename(path))
    with open(out, "w") as f:
        yaml.safe_dump(doc, f, sort_keys=False)
    return out


def rogue_dhcp(path: str, report: Report, attacker, server, client) -> None:
    """The attacker runs a DHCP server of its own; the client asks while the
    real one is away, then from the real one, and is pinned to that lease."""
    subnet = ipaddress.ip_network(f"{server.ip}/24", strict=False)
    hosts = list(subnet.hosts())
    with Lab(dhcp_variant(path, server, client, attacker)) as lab:
        with dhcptools.Server(lab.host(attacker.name), str(subnet),
                              (str(hosts[199]), str(hosts[209]))) as rogue:
            got = dhcptools.Client(lab.host(client.name)).lease(seconds=8)
            offered = rogue.log_text().count("DHCPOFFER")
        report.check(got is None and offered > 0,
                     f"{attacker.name} runs a rogue dnsmasq: it made {offered} offers, "
                     f"{client.name} got {got or 'nothing'}", "nothing")
        with dhcptools.Server(lab.host(server.name), str(subnet),
                              (str(hosts[99]), str(hosts[149]))):
            dhclient = dhcptools.Client(lab.host(client.name))
            got = dhclient.lease()

            def lease():
                vm = next(v for v in lab.api("/api/v1/vms") if v["name"] == client.name)
                return (vm["dhcp"] or {}).get("lease") or {}
            pinned = got is not None and probes.wait_for(lambda: lease().get("ip") == got, 5)
            report.check(pinned, f"from {server.name}, the declared server, {client.name} "
                                 f"got {got}: the controller pinned it to that lease")
            with probes.capture(lab.host(server.name), "udp port 9") as cap:
                probes.craft(lab.host(client.name), "ipv4", count=5, src_mac=client.mac,
                             src_ip=str(hosts[150]), dst_mac=server.mac, dst_ip=server.ip)
            forged = cap.count()
            cap.close()
            report.check(forged == 0, f"{client.name} sending from another address "
                                      f"({hosts[150]}): {forged}/5 delivered", "0")
            dhclient.stop()
        rogue_ra(lab, report, attacker, client)


RESPONSE_TTL = 10       # seconds the demo's scanner stays quarantined


def response_variant(path: str) -> str:
    """The same network with the demo's response rules: the lab detector's
    port scan and payload signature quarantine their source for a while."""
    doc = model.read_document(path)
    doc["response"] = {"rules": [{"signature_id": [ids_detector.SCAN_ID,
                                                   ids_detector.SIGNATURE_ID],
                                  "target": "source", "action": "quarantine",
                                  "ttl": RESPONSE_TTL}],
                       "max_per_minute": 10}
    out = os.path.join(tempfile.mkdtemp(prefix="demo-response-"), os.path.basename(path))
    with open(out, "w") as f:
        yaml.safe_dump(doc, f, sort_keys=False)
    return out


def scan(host, targets, ports=range(20, 40)) -> None:
    """A TCP connect scan of every target's ports (closed ports answer RST)."""
    addresses = ", ".join(repr(str(t)) for t in targets)
    host.cmd(f"python3 -c \"import socket\nfor a in ({addresses},):\n for p in "
             f"range({ports.start}, {ports.stop}):\n  s = socket.socket()\n"
             f"  s.settimeout(0.05)\n  s.connect_ex((a, p))\n  s.close()\"")


def ids_response(path: str, report: Report, token_file: str, token: str, attacker,
                 a, b) -> None:
    """The attacker scans its neighbours; the IDS sensors (the project's
    detector, on what mirroring delivers) write EVE alerts; the controller
    follows them, quarantines the attacker, and releases it after the TTL."""
    eve = os.path.join(os.path.dirname(token_file), "eve.json")
    with Lab(response_variant(path), controller_args=["--token-file", token_file,
                                                      "--eve-file", eve]) as lab:
        lab.pin_neighbours()
        Api(lab, token).set_default("mirror")
        sensors = ids_sensors(lab)
        detectors = [lab.host(n).popen([sys.executable, ids_detector.__file__, "--iface",
                                        probes.intf(lab.host(n)), "--eve", eve,
                                        "--seconds", "120"]) for n in sensors]
        try:
            time.sleep(0.5)        # the sensors' sockets are open
            report.check(probes.reaches(lab.host(attacker.name), str(a.ip)),
                         f"before: {attacker.name} reaches {a.name}")
            started = time.time()
            scan(lab.host(attacker.name), [a.ip, b.ip])

            def acted():
                return [e for e in lab.api("/api/v1/events?source=response")["events"]
                        if e["vm"] == attacker.name and e["kind"] == "quarantined"]
            quarantined = probes.wait_for(acted, 10)
            event = acted()[0] if quarantined else {}
            alert = event.get("alert", {})
            report.check(quarantined and alert.get("signature_id") == ids_detector.SCAN_ID,
                         f"{attacker.name} scans 20 ports of {a.name} and {b.name}; "
                         f"{', '.join(sensors)} see it mirrored; the alert \""
                         f"{alert.get('signature')}\" quarantines it "
                         f"{(event.get('time', started) - started) * 1000:.0f} ms after the "
                         f"scan began")
            lab.wait_datapath()
            cut = not probes.reaches(lab.host(attacker.name), str(a.ip)) and \
                not probes.reaches(lab.host(attacker.name), str(b.ip)) and \
                not probes.reaches(lab.host(a.name), str(attacker.ip))
            report.check(cut, f"its traffic stops: {attacker.name} reaches neither "
                              f"{a.name} nor {b.name}, and nothing reaches it")
            report.check(probes.reaches(lab.host(a.name), str(b.ip)),
                         f"{a.name} and {b.name} still reach each other")
            expires = event.get("expires") or time.time()

            def released():
                return any(e["vm"] == attacker.name and e["kind"] == "released"
                           for e in lab.api("/api/v1/events?source=response")["events"])
            freed = probes.wait_for(released, expires - time.time() + 5)
            lab.wait_datapath()
            report.check(freed and probes.reaches(lab.host(attacker.name), str(a.ip)),
                         f"after its {RESPONSE_TTL} s TTL it is released by itself and "
                         f"reaches {a.name} again")
            for e in lab.api("/api/v1/events?source=response")["events"]:
                report.line(f"audit: {e['kind']:12} {e['vm'] or '-':8} {e['detail']}")
        finally:
            for d in detectors:
                d.terminate()
            for d in detectors:
                d.wait(timeout=5)


def rogue_ra(lab: Lab, report: Report, attacker, client, expect_heard: bool = False) -> None:
    """The attacker advertises itself as an IPv6 router with a prefix of
    its own: the client never hears it (it is no declared ipv6_router),
    where a hub delivers it."""
    source = str(model.eui64_link_local(attacker.mac))
    with probes.capture(lab.host(client.name), "icmp6 and ip6[40] == 134") as cap:
        probes.craft(lab.host(attacker.name), "ra", count=5, src_mac=attacker.mac,
                     dst_mac="33:33:00:00:00:01", src_ip6=source, dst_ip6="ff02::1",
                     prefix="fd00:bad::")
    heard = cap.count()
    cap.close()
    taken = "fd00:bad:" in lab.host(client.name).cmd("ip -6 addr; ip -6 route")
    report.check((heard == 5 and taken) if expect_heard else (heard == 0 and not taken),
                 f"{attacker.name} sends 5 router advertisements (prefix fd00:bad::/64): "
                 f"{client.name} heard {heard}, {'took' if taken else 'took no'} route "
                 f"or address from them", "5 and took" if expect_heard else "0")


def main(argv=None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    path = argv[0] if argv else "examples/consolidated.yaml"
    setLogLevel("warning")
    try:
        net = model.load(path)
    except model.NetworkFileError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    attacker, a, b = pick_roles(net)
    report = Report()
    started = time.time()
    print(f"Network {path}: {len(net.segments)} segments, {len(net.hypervisors)} "
          f"hypervisors, {len(net.vms)} VMs.")
    print(f"{attacker.name} plays a compromised VM; it shares segment "
          f"'{attacker.segment}' and hypervisor {attacker.hypervisor} with {a.name}; "
          f"{b.name} is on {b.hypervisor}.")

    report.section("1. The problem: a hypervisor vSwitch that floods like a hub")
    with Lab(path, controller=False, switch_mode="hub") as lab:
        leaked, sent, received = sniff(lab, attacker, a, b, flood=False)
        report.check(leaked > 0, f"{attacker.name} captured {leaked} frames of "
                                 f"{a.name}<->{b.name} ({received}/{sent} pings)",
                     "> 0: the hub leaks")
        segment_matrix(lab, report, isolated=False)
        rogue_ra(lab, report, attacker, b, expect_heard=True)

    token = secrets.token_hex(16)
    token_file = os.path.join(tempfile.mkdtemp(prefix="demo-"), "token")
    with open(token_file, "w") as f:
        f.write(token)
    os.chmod(token_file, 0o600)
    state_file = os.path.join(os.path.dirname(token_file), "policy.json")

    report.section("2. The same VMs under the controller")
    with Lab(path, controller_args=["--token-file", token_file,
                                    "--state-file", state_file]) as lab:
        segment_matrix(lab, report, isolated=True)
        leaked, sent, received = sniff(lab, attacker, a, b, flood=False)
        report.check(leaked == 0, f"{attacker.name} captured {leaked} frames of "
                                  f"{a.name}<->{b.name} ({received}/{sent} pings)", "0")
        leaked, sent, received = sniff(lab, attacker, a, b, flood=True)
        report.check(leaked == 0 and received >= 0.9 * sent,
                     f"with macof flooding for {MAC_FLOOD_SECONDS}s: captured {leaked}; "
                     f"{a.name}->{b.name} pings {received}/{sent}", "0 and >= 90%")
        spoofing(lab, report, attacker, a, b)
        status = lab.status()
        flows = ", ".join(f"{name} {d['flows']}" for name, d in status["datapaths"].items())
        report.line(f"flow entries per hypervisor: {flows}")

        api = Api(lab, token)
        report.section("3. The blind spot: traffic between VMs never reaches the IDS")
        blind_spot(lab, api, report, [(attacker, a), (a, b)])

        report.section("4. Steering: the physical firewall decides again")
        if lab.network.hypervisors and all(hv.firewall_port for hv in lab.network.hypervisors):
            steering(lab, api, report, attacker, a, b)
        else:
            report.line("skipped: not every hypervisor has a firewall_port")

    report.section(f"5. Policy follows the VM: {b.name} bound by interface, live-migrated")
    outsider = next((v for v in net.vms if v.segment != b.segment), None)
    uplinked = [hv for hv in net.hypervisors if hv.uplink_port is not None]
    if outsider is None or len(uplinked) < 2 or b.hypervisor not in {h.name for h in uplinked}:
        report.line("skipped: needs two uplinked hypervisors and a second segment")
    else:
        migration(path, report, token_file, token, b, a, outsider)

    report.section("6. Remote mirroring that needs nothing of the physical network: ERSPAN")
    if len(uplinked) < 2 or a.hypervisor == b.hypervisor:
        report.line("skipped: needs two uplinked hypervisors")
    else:
        remote_mirror(path, report, token_file, token, a, b)

    report.section("7. The way out: gateways, and north-south policy")
    variant = gateway_variant(path) if uplinked else None
    if variant is None:
        report.line("skipped: needs an uplink and two segments whose VMs share a /24")
    else:
        way_out(variant, report, token_file, token)

    report.section("8. Rogue DHCP servers and IPv6 routers reach nobody; a guest gets "
                   "its lease")
    rogue_dhcp(path, report, attacker, a, b)

    report.section("9. The IDS closes the loop: a scan, an alert, a quarantine, a release")
    if not all(model.reaches_ids(net, hv) for hv in net.hypervisors):
        report.line("skipped: not every hypervisor can send copies to an IDS")
    else:
        ids_response(path, report, token_file, token, attacker, a, b)

    print(f"\n{len(report.failures)} failed checks; {time.time() - started:.0f}s.")
    for failure in report.failures:
        print(f"   FAIL: {failure}")
    return 1 if report.failures else 0


if __name__ == "__main__":
    sys.exit(main())
