"""Segment isolation and a switch that never acts as a hub (real OVS + Mininet)."""
from topologies import probes

from .conftest import flow_packets


def test_same_segment_reaches_and_segments_are_isolated(lab):
    net = lab.network
    hosts = {vm.name: lab.host(vm.name) for vm in net.vms}
    got = probes.reachability(hosts, {vm.name: str(vm.ip) for vm in net.vms})
    segment = {vm.name: vm.segment for vm in net.vms}
    wrong = {pair: ok for pair, ok in got.items()
             if ok != (segment[pair[0]] == segment[pair[1]])}
    assert len(got) == len(net.vms) * (len(net.vms) - 1)
    assert not wrong, f"pairs that do the wrong thing (True = reached): {wrong}"
    # Same segment across hypervisors is part of what was checked.
    assert got[("web1", "web3")] and got[("app1", "app2")] and got[("mgmt1", "mgmt2")]


def test_no_broadcast_arp_multicast_or_ipv6_crosses_segments(lab):
    sender = lab.network.vm("web1")
    src = lab.host("web1")
    others = [vm for vm in lab.network.vms if vm.name != "web1"]
    caps = {vm.name: probes.Capture(lab.host(vm.name), f"ether src {sender.mac}").start()
            for vm in others}
    try:
        src.cmd("ping -n -c 2 -W 1 10.0.10.99")                # ARP broadcasts
        src.cmd("ping -n -b -c 2 -W 1 10.255.255.255")         # IPv4 broadcast
        probes.craft(src, "ipv4", count=3, src_mac=sender.mac, src_ip=sender.ip,
                     dst_mac="01:00:5e:00:00:fb", dst_ip="224.0.0.251")  # multicast
        src.cmd(f"ping -6 -n -c 2 -W 1 ff02::1%{probes.intf(src)}")      # IPv6 ND/mcast
        probes.craft(src, "ipv6", count=3, src_mac=sender.mac, dst_mac="33:33:00:00:00:01")
    finally:
        for cap in caps.values():
            cap.stop()
    seen = {name: {"arp": cap.count("arp"), "ipv4-mcast": cap.count("ip multicast"),
                   "ipv4-bcast": cap.count("ip broadcast"), "ipv6": cap.count("ip6")}
            for name, cap in caps.items()}
    for cap in caps.values():
        cap.close()
    for vm in others:
        if vm.segment == sender.segment:
            # The probe can see: same-segment VMs get the ARP and multicast.
            assert seen[vm.name]["arp"] > 0 and seen[vm.name]["ipv4-mcast"] > 0, seen
        else:
            assert sum(seen[vm.name].values()) == 0, (vm.name, seen[vm.name])
    # IPv6 is not declared for any VM, so port security drops it everywhere.
    assert all(s["ipv6"] == 0 for s in seen.values()), seen


def test_unicast_reaches_only_its_owner_even_under_mac_flood(lab):
    net = lab.network
    attacker = net.vm("web2")              # shares the dmz segment with web1, web3
    learner = lab.host("hv2l20")           # host on a learning port, internal segment
    # Frames from the other VMs that are not addressed to web2. Naming the
    # sources keeps macof's own outgoing flood out of the capture buffer.
    others = " or ".join(f"ether src {vm.mac}" for vm in net.vms if vm is not attacker)
    cap = probes.Capture(lab.host("web2"), f"not ether dst {attacker.mac} and "
                                           f"not ether multicast and ({others})").start()
    app2_cap = probes.Capture(lab.host("app2"),
                              f"not ether src {net.vm('app1').mac} and "
                              f"not ether src {learner.MAC()} and not ether multicast "
                              f"and not ether src {net.vm('app2').mac}").start()
    floods = [probes.flood_macs(lab.host("web2"), 10), probes.flood_macs(learner, 10)]
    pings = [lab.host(a).popen(["ping", "-n", "-c", "80", "-i", "0.1", "-W", "1",
                                str(net.vm(b).ip)], stdout=probes.subprocess.PIPE, text=True)
             for a, b in (("web1", "web3"), ("app1", "app2"), ("mgmt2", "mgmt1"))]
    results = [p.communicate(timeout=60)[0] for p in pings]
    for f in floods:
        f.wait(timeout=30)
    cap.stop()
    app2_cap.stop()
    leaked, flooded = cap.packets(), app2_cap.count()
    cap.close()
    app2_cap.close()
    assert leaked == [], f"web2 received unicast not addressed to it: {leaked[:5]}"
    assert flooded == 0, "frames from the flooding learning-port host reached app2"
    for out in results:
        sent, received = (int(x) for x in
                          probes.re.search(r"(\d+) packets transmitted, (\d+) received",
                                           out).groups())
        assert received >= 0.9 * sent, f"traffic stalled during the flood: {out[-200:]}"
    # The flood really happened and was stopped at the attacker's port.
    assert flow_packets("hv1", "in_port=11 actions=drop") > 1000
