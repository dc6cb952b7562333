"""Remote mirroring on real OVS (tests/networks/remote_mirror.yaml: rm1 and
rm2 have no IDS of their own, rm3 has one). Every mirrored frame reaches an
IDS exactly once, whichever hypervisors its two ends are on:
- by ERSPAN or GRE to the central IDS, which sees the original frames byte
  for byte after decapsulation, whatever the core has learned;
- by the RSPAN VLAN, only while the core does not learn MACs in it: with
  learning on, copies go unicast to a hypervisor and miss the IDS (shown).
"""
import subprocess
from collections import Counter

import pytest

from topologies import probes, remote_ids
from topologies.lab import CENTRAL_IDS, Lab

from .conftest import NETWORKS

NETWORK = f"{NETWORKS}/remote_mirror.yaml"
CORE = "rmcore"
TUNNEL = "mirror:\n  erspan: {remote_ip: 198.18.7.10, port: 90, session: 7}\n"
PINGS = 10


def variant(tmp_path, mirror: str) -> str:
    with open(NETWORK) as f:
        text = f.read()
    assert TUNNEL in text
    if "vlan" in mirror:             # no tunnel: no tunnel port either
        text = text.replace(", mirror_port: 91", "")
    path = tmp_path / "remote_mirror.yaml"
    path.write_text(text.replace(TUNNEL, mirror))
    return str(path)


def converse(lab, pairs, central_bpf: str) -> dict[str, list[bytes]]:
    """Ping each (a, b) pair PINGS times, the last of them full-size; the
    ICMP frames each VM received and each IDS got, raw."""
    ends = sorted({name for pair in pairs for name in pair})
    for a, b in pairs:                       # ARP settled before counting
        assert probes.ping(lab.host(a), str(lab.network.vm(b).ip), count=1)[1] == 1
    caps = {name: probes.Capture(lab.host(name), "icmp").start() for name in ends}
    caps[CENTRAL_IDS] = probes.Capture(lab.host(CENTRAL_IDS), central_bpf).start()
    caps["rm3ids"] = probes.Capture(lab.host("rm3ids"), "icmp").start()
    try:
        for a, b in pairs:
            for count, size in ((PINGS - 1, 56), (1, 1472)):
                sent, answered = probes.ping(lab.host(a), str(lab.network.vm(b).ip),
                                             count=count, interval=0.05, size=size)
                assert answered == sent == count, (a, b, size)
        got = {name: cap.frames() for name, cap in caps.items()}
    finally:
        for cap in caps.values():
            cap.close()
    return got


def mac_of(lab, vm: str) -> bytes:
    return bytes.fromhex(lab.network.vm(vm).mac.replace(":", ""))


PAIRS = [("n1", "n2"), ("n2", "n1"), ("n2", "n3")]


@pytest.mark.parametrize("kind", ["erspan", "gre"])
def test_tunnelled_copies_reach_the_central_ids_once_byte_for_byte(tmp_path, kind):
    mirror = TUNNEL if kind == "erspan" else TUNNEL.replace("erspan", "gre")
    with Lab(variant(tmp_path, mirror), core=CORE) as lab:
        hvs = {h["name"]: h for h in lab.api("/api/v1/hypervisors")}
        assert hvs["rm2"]["mirror"] == {"via": kind, "port": 91, "remote_ip": "198.18.7.10",
                                        "session": 7}
        got = converse(lab, PAIRS, "ip proto 47")
        received = [f for vm in ("n1", "n2", "n3") for f in got[vm]]
        n3 = mac_of(lab, "n3")
        remote = [f for f in received if f[6:12] != n3]     # sent from rm1 or rm2
        sessions, inner = set(), []
        for frame in got[CENTRAL_IDS]:
            decap = remote_ids.decapsulate(frame)
            assert decap is not None, f"not a tunnelled copy: {frame[:40].hex()}"
            sessions.add(decap[0])
            inner.append(decap[1])
        assert sessions == {7}
        assert max(map(len, inner)) == 1514       # a full-size frame's copy too
        assert len(remote) == 5 * PINGS        # n1<->n2 both ways twice, n2->n3
        assert Counter(remote_ids.icmp_only(inner)) == Counter(remote), \
            "each copy exactly once, unchanged"
        assert Counter(got["rm3ids"]) == Counter(f for f in received if f[6:12] == n3)
        # No copy crossed the physical network as a tagged frame.
        assert lab.status()["mirror_copies_returned"] == {}


def test_rspan_vlan_copies_once_while_the_core_floods_it_and_miss_when_it_learns(tmp_path):
    with Lab(variant(tmp_path, "mirror:\n  vlan: 900\n"), core=CORE) as lab:
        def central_copies():
            got = converse(lab, PAIRS[:2], "icmp")
            expected = [f for vm in ("n1", "n2") for f in got[vm]]
            return Counter(remote_ids.icmp_only(got[CENTRAL_IDS])), Counter(expected)

        copies, expected = central_copies()
        assert sum(expected.values()) == 4 * PINGS
        assert copies == expected, "with flood_vlans on the core: each copy once"
        # The core floods copies to the other uplinks too: counted and explained.
        assert probes.wait_for(lambda: lab.status()["mirror_copies_returned"], 8)
        assert "mirror copies came back on its uplink in VLAN 900" in lab.log_tail(200)
        # The defect RSPAN semantics prevent: a core that learns MACs in the
        # mirror VLAN learns the VMs from their own copies.
        subprocess.run(["ovs-vsctl", "clear", "bridge", CORE, "flood_vlans"], check=True)
        copies, expected = central_copies()
        assert sum(copies.values()) < sum(expected.values()) / 2, \
            "a learning core sends copies to hypervisors, not to the IDS"
