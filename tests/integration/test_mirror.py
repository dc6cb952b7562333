"""Mirror-to-IDS on real OVS: copies exactly once, identical, nothing else.

hv1 has its own IDS port (host hv1ids); hv2 sends copies over mirror VLAN
900 to the central IDS on the core (host ids), as the example declares.
"""
import subprocess
import time

from scapy.all import rdpcap

from topologies import probes
from topologies.lab import Lab

from .conftest import example_variant

REQUESTS = "icmp[icmptype] == icmp-echo"
REPLIES = "icmp[icmptype] == icmp-echoreply"


def _captures(lab, names, bpf):
    return {n: probes.Capture(lab.host(n), bpf).start() for n in names}


def _stop(caps):
    for cap in caps.values():
        cap.stop()


def _close(caps):
    for cap in caps.values():
        cap.close()


def _frames(cap, bpf):
    """The raw bytes of the captured frames that match bpf, in order."""
    out = cap.path + ".sel"
    subprocess.run(["tcpdump", "-r", cap.path, "-w", out, bpf], check=True,
                   capture_output=True)
    return [bytes(p) for p in rdpcap(out)]


def _between(net, a, b, kind):
    return f"ether src {net.vm(a).mac} and ether dst {net.vm(b).mac} and {kind}"


def test_mirror_copies_each_frame_once_identical_local_and_remote(tmp_path):
    with Lab(example_variant(tmp_path, "  default: mirror\n")) as lab:
        net = lab.network
        caps = _captures(lab, ["hv1ids", "ids", "web1", "web2"], "icmp")
        assert probes.ping(lab.host("web1"), str(net.vm("web2").ip), count=10)[1] == 10
        assert probes.ping(lab.host("web1"), str(net.vm("web3").ip), count=10)[1] == 10
        _stop(caps)
        flows = {"same-hv requests": _between(net, "web1", "web2", REQUESTS),
                 "same-hv replies": _between(net, "web2", "web1", REPLIES),
                 "cross requests": _between(net, "web1", "web3", REQUESTS),
                 "cross replies": _between(net, "web3", "web1", REPLIES)}
        seen = {(ids, what): caps[ids].count(bpf)
                for ids in ("hv1ids", "ids") for what, bpf in flows.items()}
        # Same hypervisor: both directions enter at hv1 and go to its own IDS.
        # Across: requests enter at hv1 (local IDS), replies at hv2 (central).
        assert seen == {("hv1ids", "same-hv requests"): 10, ("hv1ids", "same-hv replies"): 10,
                        ("hv1ids", "cross requests"): 10, ("hv1ids", "cross replies"): 0,
                        ("ids", "same-hv requests"): 0, ("ids", "same-hv replies"): 0,
                        ("ids", "cross requests"): 0, ("ids", "cross replies"): 10}, seen
        # Byte for byte what the receiving VM got, on both paths.
        bpf = flows["same-hv requests"]
        assert _frames(caps["hv1ids"], bpf) == _frames(caps["web2"], bpf)
        bpf = flows["cross replies"]
        assert _frames(caps["ids"], bpf) == _frames(caps["web1"], bpf)
        _close(caps)


def test_fixed_size_tcp_transfer_reaches_the_ids_byte_for_byte(tmp_path):
    with Lab(example_variant(tmp_path, "  default: mirror\n")) as lab:
        net = lab.network
        data = _between(net, "web1", "web3", "tcp port 5201")
        caps = _captures(lab, ["hv1ids", "web3"], "tcp port 5201")
        server = lab.host("web3").popen(["iperf3", "-s", "-1"], stdout=subprocess.DEVNULL)
        time.sleep(0.5)
        out = lab.host("web1").cmd(f"iperf3 -c {net.vm('web3').ip} -n 1M -b 10M")
        server.wait(timeout=30)
        _stop(caps)
        assert "iperf Done" in out, out
        at_ids, at_vm = _frames(caps["hv1ids"], data), _frames(caps["web3"], data)
        assert sum(map(len, at_vm)) > 1_048_576          # 1 MiB of payload, plus headers
        assert sum(map(len, at_ids)) == sum(map(len, at_vm))
        assert at_ids == at_vm
        _close(caps)


def test_segment_and_vm_scopes_copy_only_what_they_name(tmp_path):
    policy = ("  default: allow\n  segments: {dmz: mirror}\n"
              "  vms: {app1: {mode: mirror, direction: sent}}\n")
    with Lab(example_variant(tmp_path, policy)) as lab:
        net = lab.network
        caps = _captures(lab, ["hv1ids", "ids"], "icmp")
        for src, dst in (("web1", "web2"), ("app1", "db1"), ("mgmt1", "mgmt2")):
            assert probes.ping(lab.host(src), str(net.vm(dst).ip), count=5)[1] == 5
        _stop(caps)
        both = {what: caps["hv1ids"].count(bpf) + caps["ids"].count(bpf) for what, bpf in {
            "dmz": f"ether host {net.vm('web1').mac}",
            "app1 sent": _between(net, "app1", "db1", REQUESTS),
            "app1 received": _between(net, "db1", "app1", REPLIES),
            "management": f"ether host {net.vm('mgmt1').mac}"}.items()}
        assert both == {"dmz": 10, "app1 sent": 5, "app1 received": 0, "management": 0}, both
        _close(caps)


def test_mirror_vlan_never_reaches_a_vm_and_vms_cannot_inject_into_it(tmp_path):
    with Lab(example_variant(tmp_path, "  default: mirror\n")) as lab:
        net = lab.network
        vms = [vm.name for vm in net.vms]
        tagged = _captures(lab, vms, "vlan 900")
        ids = _captures(lab, ["ids"], "udp port 9")
        assert probes.ping(lab.host("web3"), str(net.vm("web1").ip), count=5)[1] == 5
        web3 = net.vm("web3")
        probes.craft(lab.host("web3"), "tagged", count=5, vlan=900, src_mac=web3.mac,
                     src_ip=web3.ip, dst_mac=net.vm("web1").mac, dst_ip=net.vm("web1").ip)
        _stop(tagged)
        _stop(ids)
        assert {n: c.count() for n, c in tagged.items()} == {n: 0 for n in vms}
        assert ids["ids"].count() == 0
        _close(tagged)
        _close(ids)


def test_mirror_counters_and_ids_port_down_are_reported(tmp_path):
    with Lab(example_variant(tmp_path, "  default: mirror\n")) as lab:
        net = lab.network
        assert probes.ping(lab.host("web1"), str(net.vm("web2").ip), count=10)[1] == 10
        time.sleep(2.5)                       # counters are polled every 2 s
        counters = lab.api("/api/v1/counters")
        # 10 requests and 10 replies entered at hv1 and were copied there.
        assert counters["hypervisors"]["hv1"]["reasons"]["policy-mirror"]["packets"] >= 20
        assert counters["hypervisors"]["hv1"]["mirrored"]["packets"] >= 20
        mark = len(open(lab.controller_log).read())
        subprocess.run(["ip", "link", "set", "hv1-p3", "down"], check=True)
        deadline = time.time() + 5
        while time.time() < deadline and "IDS port 3 is down" not in \
                open(lab.controller_log).read()[mark:]:
            time.sleep(0.2)
        assert "hv1: IDS port 3 is down: mirrored copies are lost" in \
            open(lab.controller_log).read()[mark:]
        subprocess.run(["ip", "link", "set", "hv1-p3", "up"], check=True)
