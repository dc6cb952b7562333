"""The lab's physical firewall: a Linux host filtering as a bump in the wire.

One host, `fw`, has a link to every hypervisor's firewall port, as one
firewall cluster serves a data centre. Steered frames arrive tagged with
their segment's VLAN and must go back out the same link with the same tag.
Each link is the only port of a Linux bridge in hairpin mode, flooding and
not learning, so every frame the firewall lets through is reflected back
where it came from, tag untouched. nftables filters what crosses: bridged
IPv4 goes through the inet `forward` hook with connection tracking, tagged
too (br_netfilter with bridge-nf-filter-vlan-tagged). One host for all
hypervisors means one conntrack table, so stateful rules hold when a
request is steered at one hypervisor and its reply at another.
"""
from __future__ import annotations

import re
import tempfile

from controller import model

HOST = "fw"
TABLE = "vguard_fw"
BASE_RULESET = f"""
table inet {TABLE} {{
    chain forward {{
        type filter hook forward priority 0; policy accept;
        counter comment "steered"
    }}
}}
"""


def interfaces(network: model.Network) -> dict[str, str]:
    """Hypervisor name -> the firewall's interface towards its firewall port."""
    hvs = [hv for hv in network.hypervisors if hv.firewall_port is not None]
    return {hv.name: f"{HOST}-eth{i}" for i, hv in enumerate(hvs)}


def configure(host, network: model.Network) -> None:
    """A hairpin bridge per link, the base ruleset."""
    run(host, "sysctl -qw net.bridge.bridge-nf-call-iptables=1")
    run(host, "sysctl -qw net.bridge.bridge-nf-filter-vlan-tagged=1")
    for hv_name, intf in interfaces(network).items():
        bridge = bridge_of(network, hv_name)
        run(host, f"ip link add {bridge} type bridge")
        run(host, f"ip link set {intf} master {bridge}")
        run(host, f"bridge link set dev {intf} hairpin on learning off flood on")
        run(host, f"ip link set {bridge} up")
    load(host, BASE_RULESET)


def bridge_of(network: model.Network, hv_name: str) -> str:
    """The bridge serving one hypervisor's link (down = that firewall is gone)."""
    return "br-" + interfaces(network)[hv_name].rsplit("eth", 1)[1]


def load(host, ruleset: str) -> None:
    """Replace the firewall's ruleset in one nft transaction."""
    with tempfile.NamedTemporaryFile("w", suffix=".nft") as f:
        # Declaring the table first makes the delete valid when it is new.
        f.write(f"table inet {TABLE}\ndelete table inet {TABLE}\n{ruleset}")
        f.flush()
        run(host, f"nft -f {f.name}")


def rules(host, *lines: str) -> None:
    """A ruleset of the given forward-chain rules after the counter."""
    body = "\n        ".join(lines)
    load(host, BASE_RULESET.replace('counter comment "steered"',
                                    'counter comment "steered"\n        ' + body))


def counters(host) -> dict[str, int]:
    """Packets counted by each commented rule of the forward chain."""
    out = host.cmd(f"nft list chain inet {TABLE} forward")
    return {m.group(2): int(m.group(1))
            for m in re.finditer(r'counter packets (\d+) bytes \d+.*?comment "([^"]+)"', out)}


def run(host, command: str) -> str:
    out = host.cmd(command + "; echo rc=$?")
    if not out.rstrip().endswith("rc=0"):
        raise RuntimeError(f"firewall: `{command}` failed: {out}")
    return out
