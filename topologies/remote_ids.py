"""The lab's central IDS on the core, and the two ways copies reach it.

- mirror.vlan (RSPAN): the IDS is an access port of the mirror VLAN on the
  core, and the core does not learn MACs in that VLAN (OVS `flood_vlans`,
  a physical switch's "remote-span" VLAN). A learning core would learn the
  VMs' MACs from their own copies and send later copies unicast to a
  hypervisor's uplink instead of to the IDS.
- mirror.erspan / mirror.gre: each hypervisor without an IDS port gets a
  tunnel port to the IDS address; the core is only an IP underlay. On the
  userspace datapath OVS tunnels natively: the encapsulated copy leaves by
  the bridge that owns the route to the IDS (the core's LOCAL port, given an
  address in the benchmarking range 198.18.0.0/15, which nothing on the
  machine routes), with OVS's own route and ARP.

decapsulate() is the IDS's side: what a sensor reading ERSPAN or GRE sees.
"""
from __future__ import annotations

import ipaddress
import struct
import subprocess

from controller import model

UNDERLAY = ipaddress.IPv4Network("198.18.0.0/15")
UNDERLAY_PREFIX = 24
# ERSPAN II adds 50 bytes (outer Ethernet, IPv4, GRE with sequence, ERSPAN);
# the link to the IDS takes them on top of a full-size frame.
UNDERLAY_MTU = 1600
ETH_P_ERSPAN2, ETH_P_TEB = 0x88BE, 0x6558


class UnderlayError(ValueError):
    """The lab cannot give this network a sealed underlay."""


def underlay(network: model.Network) -> tuple[str, str] | None:
    """(the core's address/prefix, the IDS's address/prefix) for a tunnel
    mirror; None without one. Refuses an IDS address outside 198.18.0.0/15:
    the lab must not route to anything real."""
    tunnel = network.mirror_tunnel
    if tunnel is None:
        return None
    if tunnel.remote_ip not in UNDERLAY:
        raise UnderlayError(f"{network.source}: mirror.{tunnel.kind}.remote_ip "
                            f"{tunnel.remote_ip}: the lab puts the IDS in {UNDERLAY} "
                            "only (addresses the machine does not route)")
    subnet = ipaddress.IPv4Network(f"{tunnel.remote_ip}/{UNDERLAY_PREFIX}", strict=False)
    local = next(ip for ip in subnet.hosts() if ip != tunnel.remote_ip)
    return f"{local}/{UNDERLAY_PREFIX}", f"{tunnel.remote_ip}/{UNDERLAY_PREFIX}"


def tunnel_port_name(hv: model.Hypervisor) -> str:
    return f"{hv.name}-mir"


def configure(network: model.Network, core: str, core_port: str, ids_host,
              ids_intf: str) -> None:
    """After the lab has started: the core (the IDS on its `core_port`) and
    the central IDS as the network's mirror section needs them."""
    _quiet(ids_host, ids_intf)
    if network.mirror_vlan is not None:
        _vsctl("set", "port", core_port, f"tag={network.mirror_vlan}")
        _vsctl("set", "bridge", core, f"flood_vlans={network.mirror_vlan}")
        return
    local, remote = underlay(network)
    _check_unused(local)
    tunnel = network.mirror_tunnel
    subprocess.run(["sysctl", "-qw", f"net.ipv6.conf.{core}.disable_ipv6=1"],
                   capture_output=True)
    _run(["ip", "addr", "add", local, "dev", core])
    _run(["ip", "link", "set", core, "up"])
    # Underlay frames are untagged; the segments' tagged frames flooding the
    # core stay away from the IDS and the machine's own stack.
    _vsctl("set", "port", core_port, "trunks=0")
    _vsctl("set", "port", core, "trunks=0")
    _run(["ip", "link", "set", core_port, "mtu", str(UNDERLAY_MTU)])
    ids_host.cmd(f"ip link set {ids_intf} mtu {UNDERLAY_MTU}")
    _run(["ovs-appctl", "ovs/route/add", f"{tunnel.remote_ip}/32", core])
    ids_host.cmd(f"ip addr add {remote} dev {ids_intf}")
    # A sensor takes the tunnel in without a GRE stack: drop it before the
    # kernel answers every copy with "protocol unreachable".
    ids_host.cmd("nft add table ip sensor; nft add chain ip sensor in "
                 "'{ type filter hook input priority 0; policy accept; }'; "
                 "nft add rule ip sensor in ip protocol gre drop")
    # Each hypervisor its own underlay address, as real ones have: OVS also
    # refuses two tunnel ports alike in everything in one vswitchd.
    addresses = (ip for ip in ipaddress.IPv4Network(local, strict=False).hosts()
                 if str(ip) not in (local.split("/")[0], str(tunnel.remote_ip)))
    for hv in network.hypervisors:
        if hv.mirror_port is None:
            continue
        address = next(addresses)
        # OVS takes a tunnel's source only if it is a local address.
        _run(["ip", "addr", "add", f"{address}/32", "dev", core])
        options = [f"options:remote_ip={tunnel.remote_ip}", f"options:key={tunnel.session}",
                   f"options:local_ip={address}"]
        if tunnel.kind == "erspan":
            options += ["options:erspan_ver=1", f"options:erspan_idx={tunnel.session}"]
        name = tunnel_port_name(hv)
        _vsctl("add-port", hv.name, name, "--", "set", "interface", name,
               f"type={tunnel.kind}", *options, f"ofport_request={hv.mirror_port}")


def unconfigure(network: model.Network) -> None:
    """What configure() made outside the bridges (they take their ports and
    addresses with them): OVS's route to the IDS."""
    if network.mirror_tunnel is not None:
        subprocess.run(["ovs-appctl", "ovs/route/del", f"{network.mirror_tunnel.remote_ip}/32"],
                       capture_output=True)


def decapsulate(frame: bytes) -> tuple[int, bytes] | None:
    """(session id or GRE key, the inner frame) of an ERSPAN type II or GRE
    (transparent Ethernet) copy in an untagged IPv4 frame; None otherwise."""
    if len(frame) < 34 or frame[12:14] != b"\x08\x00" or frame[23] != 47:
        return None
    gre = 14 + (frame[14] & 0x0F) * 4
    flags, proto = struct.unpack_from("!HH", frame, gre)
    offset, key = gre + 4, None
    if flags & 0x8000:                     # checksum present
        offset += 4
    if flags & 0x2000:                     # key present
        key = struct.unpack_from("!I", frame, offset)[0]
        offset += 4
    if flags & 0x1000:                     # sequence number present
        offset += 4
    if proto == ETH_P_ERSPAN2:
        session = struct.unpack_from("!H", frame, offset + 2)[0] & 0x03FF
        return session, frame[offset + 8:]
    if proto == ETH_P_TEB:
        return key, frame[offset:]
    return None


def icmp_only(frames) -> list[bytes]:
    """The untagged IPv4 ICMP frames among `frames` (what pings are counted by)."""
    return [f for f in frames if len(f) > 23 and f[12:14] == b"\x08\x00" and f[23] == 1]


def _quiet(host, intf: str) -> None:
    """No IPv6 of its own: its link-local chatter would enter the mirror VLAN
    (and be counted as copies coming back) or the underlay."""
    host.cmd(f"sysctl -qw net.ipv6.conf.{intf}.disable_ipv6=1")


def _check_unused(local: str) -> None:
    """The underlay range must be free in the root namespace: never touch
    a route the machine uses."""
    net = ipaddress.IPv4Network(local, strict=False)
    routes = subprocess.run(["ip", "-4", "route", "show", "table", "all"],
                            capture_output=True, text=True).stdout
    for line in routes.splitlines():
        dest = line.split()[0] if line.split() else ""
        if dest in ("default", "broadcast", "local", "unreachable"):
            dest = line.split()[1] if len(line.split()) > 1 else ""
        try:
            used = ipaddress.IPv4Network(dest, strict=False)
        except ValueError:
            continue
        if used.overlaps(net) and not used.is_loopback:
            raise UnderlayError(f"the lab's underlay {net} overlaps the machine's route "
                                f"{line.strip()!r}: not touching it")


def _run(argv: list[str]) -> None:
    done = subprocess.run(argv, capture_output=True, text=True)
    if done.returncode:
        raise UnderlayError(f"{' '.join(argv)}: {done.stderr.strip()}")


def _vsctl(*args: str) -> None:
    _run(["ovs-vsctl", *args])
