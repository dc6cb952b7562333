"""Send hand-made frames with scapy; run inside a lab host's namespace.

    craft.py KIND --iface IF [--count N] [--src-mac M] [--dst-mac M]
             [--src-ip A] [--dst-ip A] [--vlan V] [--inner-vlan V]
    craft.py hex KIND ...      print the frame as hex instead of sending it

KIND: ipv4 (UDP to port 9), arp (reply), tagged (802.1Q), double (QinQ),
ipv6 (ICMPv6 echo to dst, link-local source); and for IPv6 port security,
from --src-ip6 to --dst-ip6: na (a neighbour advertisement that --target
is at --src-mac, override set), ns (a solicitation for --target), ra (a
router advertisement of prefix --prefix), dhcp6 (a DHCPv6 ADVERTISE).
"""
from __future__ import annotations

import argparse
import logging
import sys

logging.getLogger("scapy.runtime").setLevel(logging.ERROR)
from scapy.all import (ARP, IP, UDP, Dot1Q, Ether, ICMPv6EchoRequest,  # noqa: E402
                       ICMPv6ND_NA, ICMPv6ND_NS, ICMPv6ND_RA, ICMPv6NDOptDstLLAddr,
                       ICMPv6NDOptPrefixInfo, ICMPv6NDOptSrcLLAddr, IPv6, Raw, sendp)
from scapy.layers.dhcp6 import DHCP6_Advertise, DHCP6OptServerId  # noqa: E402

PAYLOAD = Raw(b"vguard-probe" * 4)     # probes.CRAFTED_PAYLOAD: counted by it


def frame(kind: str, a) -> Ether:
    eth = Ether(src=a.src_mac, dst=a.dst_mac)
    ip = IP(src=a.src_ip, dst=a.dst_ip) / UDP(sport=40000, dport=9) / PAYLOAD
    if kind == "ipv4":
        return eth / ip
    if kind == "arp":
        return eth / ARP(op=2, hwsrc=a.src_mac, psrc=a.src_ip, hwdst=a.dst_mac,
                         pdst=a.dst_ip)
    if kind == "tagged":
        return eth / Dot1Q(vlan=a.vlan) / ip
    if kind == "double":
        return eth / Dot1Q(vlan=a.vlan) / Dot1Q(vlan=a.inner_vlan) / ip
    if kind == "ipv6":
        return eth / IPv6(src="fe80::1", dst=a.dst_ip6) / ICMPv6EchoRequest()
    ip6 = IPv6(src=a.src_ip6, dst=a.dst_ip6, hlim=255)
    if kind == "na":
        return eth / ip6 / ICMPv6ND_NA(tgt=a.target, R=0, S=0, O=1) / \
            ICMPv6NDOptDstLLAddr(lladdr=a.src_mac)
    if kind == "ns":
        return eth / ip6 / ICMPv6ND_NS(tgt=a.target) / ICMPv6NDOptSrcLLAddr(lladdr=a.src_mac)
    if kind == "ra":
        return eth / ip6 / ICMPv6ND_RA(routerlifetime=1800) / \
            ICMPv6NDOptSrcLLAddr(lladdr=a.src_mac) / \
            ICMPv6NDOptPrefixInfo(prefix=a.prefix, prefixlen=64, L=1, A=1)
    if kind == "dhcp6":
        return eth / IPv6(src=a.src_ip6, dst=a.dst_ip6) / UDP(sport=547, dport=546) / \
            DHCP6_Advertise(trid=0x1234) / DHCP6OptServerId()
    raise SystemExit(f"unknown kind {kind}")


def main(argv=None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    as_hex = bool(argv) and argv[0] == "hex"
    if as_hex:
        argv.pop(0)
    ap = argparse.ArgumentParser()
    ap.add_argument("kind")
    ap.add_argument("--iface")
    ap.add_argument("--count", type=int, default=5)
    ap.add_argument("--src-mac", default="02:00:00:00:ee:01")
    ap.add_argument("--dst-mac", default="ff:ff:ff:ff:ff:ff")
    ap.add_argument("--src-ip", default="10.99.0.1")
    ap.add_argument("--dst-ip", default="10.99.0.2")
    ap.add_argument("--dst-ip6", default="ff02::1")
    ap.add_argument("--src-ip6", default="fe80::1")
    ap.add_argument("--target", default="fe80::2")
    ap.add_argument("--prefix", default="fd00:dead::")
    ap.add_argument("--vlan", type=int, default=10)
    ap.add_argument("--inner-vlan", type=int, default=20)
    a = ap.parse_args(argv)
    pkt = frame(a.kind, a)
    if as_hex:
        print(bytes(pkt).hex())
    else:
        sendp(pkt, iface=a.iface, count=a.count, inter=0.02, verbose=False)
        print(f"sent {a.count}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
