"""A Mininet lab built from a network file, with the controller around it.

    with Lab("examples/consolidated.yaml") as lab:
        print(lab.host("web1").cmd("ping -c1", lab.host("web3").IP()))

What a lab holds (node names as in the file):
  - one OVS bridge per hypervisor: userspace datapath, OpenFlow 1.3, fail
    mode secure, dpid from the file, connected to the controller;
  - one host per VM on its declared OpenFlow port, with its MAC and IP;
  - per hypervisor: a host `<hv>l<port>` on each learning port (random MAC,
    IP 10.255.n.m/8), `<hv>ids` on the IDS
    port (these two have no IP);
  - a `core` bridge, the physical network: a plain learning switch with no
    controller, joining every hypervisor's uplink port;
  - `ids` on the core, the central IDS that receives remote copies, when
    the file declares `mirror.vlan` (an access port of that VLAN, which the
    core floods) or `mirror.erspan`/`mirror.gre` (the tunnels' address; the
    core is their underlay): see topologies/remote_ids.py;
  - `fw`, the physical firewall (nftables on VLAN bridges, see
    topologies/firewall.py), linked to every hypervisor's firewall port;
  - `rtr`, the segments' declared gateways on the core, forwarding to `wan`,
    a host behind it (topologies/router.py), when the file declares any.
Interface names: `<host>-eth0` inside a host, `<hv>-p<port>` on a hypervisor
bridge (<port> is the OpenFlow port number), `core-p<n>` on the core.

By hand: `python -m topologies.lab FILE` brings a lab up and opens Mininet's
CLI.
"""
from __future__ import annotations

import argparse
import contextlib
import ctypes
import ipaddress
import json
import os
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from dataclasses import dataclass

from mininet.log import setLogLevel, warn
from mininet.net import Mininet
from mininet.node import OVSBridge, OVSSwitch, RemoteController

from controller import model
from topologies import firewall, flowexport, remote_ids, router

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CORE = "core"
CENTRAL_IDS = "ids"       # on the core, in the mirror VLAN, when the file has one
IFNAMSIZ = 15                                        # Linux: 15 chars + NUL
SPARE_NET = ipaddress.IPv4Network("10.255.0.0/16")   # learning-port hosts
DEFAULT_PREFIX = 8                                   # segments without a subnet
SWITCH_MODES = ("normal", "hub")


class LabError(RuntimeError):
    """The lab could not be brought up (the message says why)."""


# ------------------------------------------------------------ the network

@dataclass(frozen=True)
class _HostSpec:
    name: str
    role: str            # for error messages: "VM web1", "firewall host of hv1"
    hypervisor: str
    port: int | None     # OpenFlow port on the hypervisor bridge; None: OVS picks
    ip: str | None       # "a.b.c.d/len"; None: no address
    mac: str | None      # None: the kernel picks a random one
    ifname: str = ""     # the bridge side; "" : <hypervisor>-p<port>

    @property
    def bridge_side(self) -> str:
        return self.ifname or f"{self.hypervisor}-p{self.port}"


def tap_name(vm: model.VM) -> str:
    """The bridge-side interface of a bound VM: its `interface:`, or for a VM
    bound by iface_id a name of the lab's (any name binds then)."""
    return vm.interface or f"{vm.name}-tap"


def default_placement(network: model.Network) -> dict[str, str]:
    """Where the lab starts bound VMs (the file does not say): round-robin
    over the hypervisors, in file order."""
    hvs = [hv.name for hv in network.hypervisors]
    bound = [vm for vm in network.vms if vm.bound]
    return {vm.name: hvs[i % len(hvs)] for i, vm in enumerate(bound)}


def _host_specs(network: model.Network, placement: dict | None = None) -> list[_HostSpec]:
    placement = {**default_placement(network), **(placement or {})}
    specs, bound = [], []
    for vm in network.vms:
        subnet = network.segment(vm.segment).subnet
        prefix = subnet.prefixlen if subnet else DEFAULT_PREFIX
        ip = None if vm.ip is None else f"{vm.ip}/{prefix}"   # ip: dhcp: dhclient sets it
        if vm.bound:
            # Last, so the port numbers Mininet picks take none the file names.
            bound.append(_HostSpec(vm.name, f"VM {vm.name}", placement[vm.name], None,
                                   ip, vm.mac, tap_name(vm)))
        else:
            specs.append(_HostSpec(vm.name, f"VM {vm.name}", vm.hypervisor, vm.port,
                                   ip, vm.mac))
    spare = _spare_ips(network)
    for hv in network.hypervisors:
        for lp in hv.learning_ports:
            specs.append(_HostSpec(f"{hv.name}l{lp.port}",
                                   f"host on learning port {lp.port} of {hv.name}",
                                   hv.name, lp.port, f"{next(spare)}/8", None))
        if hv.ids_port is not None:
            specs.append(_HostSpec(f"{hv.name}ids", f"IDS host of {hv.name}",
                                   hv.name, hv.ids_port, None, None))
    return specs + bound


def _spare_ips(network: model.Network):
    """10.255.n.m addresses that no VM uses (and no .0/.255, to avoid
    confusing anyone reading a capture)."""
    taken = {vm.ip for vm in network.vms}
    for ip in SPARE_NET.hosts():
        if ip not in taken and ip.packed[-1] not in (0, 255):
            yield ip


def _uplinked(network: model.Network) -> list[model.Hypervisor]:
    return [hv for hv in network.hypervisors if hv.uplink_port is not None]


def _has_core(network: model.Network) -> bool:
    """The physical network: uplinks to join, or the underlay of mirror tunnels."""
    return bool(_uplinked(network)) or network.mirror_tunnel is not None


def _bridge_names(network: model.Network, core: str = CORE) -> set[str]:
    names = {hv.name for hv in network.hypervisors}
    return names | {core} if _has_core(network) else names


def _root_ifnames(network: model.Network, specs, core: str = CORE) -> dict[str, str]:
    """Interfaces the lab creates in the root namespace (bridge side), each
    with the name it is made from."""
    names = {s.bridge_side: s.hypervisor for s in specs}
    for n, hv in enumerate(_uplinked(network), start=1):
        names[f"{hv.name}-p{hv.uplink_port}"] = hv.name
        names[f"{core}-p{n}"] = core
    if _has_central_ids(network):
        names[_central_ids_port(network, core)] = core
    if _has_router(network):
        names.update({f"{core}-p{n}": core for n in _router_core_ports(network)})
    for hv_name in firewall.interfaces(network):
        hv = network.hypervisor(hv_name)
        names[f"{hv.name}-p{hv.firewall_port}"] = hv.name
    return names


def _has_central_ids(network: model.Network) -> bool:
    return (network.mirror_vlan is not None and bool(_uplinked(network))) \
        or network.mirror_tunnel is not None


def _central_ids_port(network: model.Network, core: str = CORE) -> str:
    """The core's port for the central IDS: after the uplinks."""
    return f"{core}-p{len(_uplinked(network)) + 1}"


def _has_router(network: model.Network) -> bool:
    return bool(router.gateways(network)) and bool(_uplinked(network))


def _router_core_ports(network: model.Network) -> list[int]:
    """The core's ports for the router's interfaces: after the central IDS's."""
    first = len(_uplinked(network)) + 2
    return [first + i for i in range(len(router.gateways(network)))]


def _check_names(network: model.Network, specs, core: str) -> None:
    """Refuse names Mininet or Linux cannot take, before anything exists."""
    def fail(problem):
        raise ValueError(f"{network.source}: {problem}")

    remote_ids.underlay(network)        # an IDS address the lab may not use
    roles = {hv.name: f"hypervisor {hv.name}" for hv in network.hypervisors}
    if _has_core(network):
        if core in roles:
            fail(f"the name {core!r} is reserved for the lab's core switch")
        roles[core] = "the core switch"
    if firewall.interfaces(network):
        if firewall.HOST in roles:
            fail(f"the name {firewall.HOST!r} is reserved for the lab's firewall")
        roles[firewall.HOST] = "the firewall"
    if _has_central_ids(network):
        if CENTRAL_IDS in roles:
            fail(f"the name {CENTRAL_IDS!r} is reserved for the lab's central IDS")
        roles[CENTRAL_IDS] = "the central IDS"
    if _has_router(network):
        for name, role in ((router.ROUTER, "the lab's router"),
                           (router.OUTSIDE, "the host behind the lab's router")):
            if name in roles:
                fail(f"the name {name!r} is reserved for {role}")
            roles[name] = role
    for s in specs:
        if s.name in roles:
            fail(f"lab node name {s.name!r} would be used twice: by the {s.role} "
                 f"and by {roles[s.name]}")
        roles[s.name] = f"the {s.role}"
    ifnames = [(f"{s.name}-eth0", f"the {s.role}") for s in specs]
    ifnames += [(n, roles[owner])
                for n, owner in _root_ifnames(network, specs, core).items()]
    for ifname, owner in ifnames:
        if len(ifname) > IFNAMSIZ:
            fail(f"interface name {ifname!r} for {owner} is longer than {IFNAMSIZ} "
                 "characters (a Linux limit): use a shorter name")


def _dpid(value: int) -> str:
    return f"{value:016x}"                    # Mininet wants 16 hex digits


def _core_dpid(network: model.Network) -> int:
    taken = {hv.dpid for hv in network.hypervisors}
    dpid = 0xC0DE_0000_0000_0001              # unlikely in a file; still checked
    while dpid in taken:
        dpid += 1
    return dpid


class _Remote(RemoteController):
    # The controller may not listen yet when the lab is built; OVS keeps
    # retrying on its own, so Mininet's telnet probe would only print noise.
    def checkListening(self):
        pass


def build_network(network: model.Network, ofp_port: int | None,
                  core: str = CORE, placement: dict | None = None) -> Mininet:
    """A Mininet (not started) for the network file; see the module doc.
    ofp_port None: no controller, hypervisor bridges in standalone mode.
    placement: vm -> hypervisor for VMs the file binds by interface or
    iface_id (default_placement otherwise)."""
    setLogLevel("warning")
    specs = _host_specs(network, placement)
    _check_names(network, specs, core)
    fail_mode = "standalone" if ofp_port is None else "secure"
    net = Mininet(controller=None)
    try:
        if ofp_port is not None:
            net.addController("c0", controller=_Remote, ip="127.0.0.1", port=ofp_port)
        for hv in network.hypervisors:
            net.addSwitch(hv.name, cls=OVSSwitch, datapath="user", failMode=fail_mode,
                          protocols="OpenFlow13", dpid=_dpid(hv.dpid))
        uplinked = _uplinked(network)
        if _has_core(network):
            # OVSBridge: fail mode standalone and never given a controller.
            net.addSwitch(core, cls=OVSBridge, datapath="user",
                          dpid=_dpid(_core_dpid(network)))
        for n, hv in enumerate(uplinked, start=1):
            net.addLink(hv.name, core, port1=hv.uplink_port, port2=n,
                        intfName1=f"{hv.name}-p{hv.uplink_port}",
                        intfName2=f"{core}-p{n}")
        if _has_central_ids(network):
            net.addHost(CENTRAL_IDS, ip=None)
            net.addLink(CENTRAL_IDS, core, port2=len(uplinked) + 1,
                        intfName1=f"{CENTRAL_IDS}-eth0",
                        intfName2=_central_ids_port(network, core))
        if _has_router(network):
            net.addHost(router.ROUTER, ip=None)
            for i, n in enumerate(_router_core_ports(network)):
                net.addLink(router.ROUTER, core, port2=n, intfName1=router.router_intf(i),
                            intfName2=f"{core}-p{n}")
            net.addHost(router.OUTSIDE, ip=f"{router.OUTSIDE_IP}/{router.WAN.prefixlen}")
            net.addLink(router.OUTSIDE, router.ROUTER, intfName1=f"{router.OUTSIDE}-eth0",
                        intfName2=router.wan_intf())
        fw_links = firewall.interfaces(network)
        if fw_links:
            net.addHost(firewall.HOST, ip=None)
        for hv_name, intf in fw_links.items():
            port = network.hypervisor(hv_name).firewall_port
            net.addLink(firewall.HOST, hv_name, port2=port, intfName1=intf,
                        intfName2=f"{hv_name}-p{port}")
        for s in specs:
            net.addHost(s.name, ip=s.ip, mac=s.mac)
            # port2 becomes the OVS ofport_request: the port the file declares.
            extra = {"addr1": s.mac} if s.mac else {}
            net.addLink(s.name, s.hypervisor, port2=s.port,
                        intfName1=f"{s.name}-eth0", intfName2=s.bridge_side, **extra)
    except BaseException:
        net.stop()
        raise
    return net


def _external_ids(vm: model.VM) -> list[str]:
    """What libvirt writes on a VM's OVS Interface."""
    return [f"external_ids:iface-id={vm.iface_id}", f"external_ids:attached-mac={vm.mac}"]


# A resumed guest's announcement, as QEMU sends it: a RARP request from its
# MAC, to everyone. A raw socket: scapy would take a second to import.
_ANNOUNCE = ("import socket,sys;s=socket.socket(socket.AF_PACKET,socket.SOCK_RAW);"
             "s.bind((sys.argv[1],0));m=bytes.fromhex(sys.argv[2].replace(':',''));"
             "s.send((b'\\xff'*6+m+b'\\x80\\x35'+bytes.fromhex('0001080006040003')"
             "+m+bytes(4)+m+bytes(4)).ljust(60,b'\\0'))")


def _run(argv: list[str]) -> None:
    done = subprocess.run(argv, capture_output=True, text=True)
    if done.returncode:
        raise LabError(f"{' '.join(argv)}: {done.stderr.strip()}")


def _host_run(host, command: str) -> None:
    out = host.cmd(command + "; echo rc=$?")
    if not out.rstrip().endswith("rc=0"):
        raise LabError(f"{host.name}: `{command}` failed: {out}")


def announce(host, mac: str) -> None:
    """Send the RARP a resumed guest sends, from the host's interface."""
    proc = host.popen([sys.executable, "-c", _ANNOUNCE, host.defaultIntf().name, mac],
                      stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    _out, err = proc.communicate(timeout=10)
    if proc.returncode:
        raise LabError(f"announcing {mac} from {host.name} failed: {err}")


def disable_offload(net: Mininet) -> None:
    """Transmit checksum offload off on every host interface: with it on,
    TCP over veth through the userspace datapath stalls (ICMP does not)."""
    for host in net.hosts:
        for intf in host.intfList():
            _out, err, rc = host.pexec("ethtool", "-K", intf.name, "tx", "off")
            if rc:
                raise LabError(f"ethtool -K {intf.name} tx off in {host.name}: {err}")


def set_switch_mode(network: model.Network, mode: str) -> None:
    """Without a controller: make every hypervisor bridge a hub (one FLOOD
    flow) or a learning switch (one NORMAL flow)."""
    action = {"hub": "FLOOD", "normal": "NORMAL"}[mode]
    for hv in network.hypervisors:
        for args in (["del-flows", hv.name], ["add-flow", hv.name, f"actions={action}"]):
            subprocess.run(["ovs-ofctl", "-O", "OpenFlow13", *args], check=True,
                           capture_output=True, text=True)


# ------------------------------------------------------------ host helpers

def _list_br() -> set[str]:
    out = subprocess.run(["ovs-vsctl", "list-br"], check=True,
                         capture_output=True, text=True).stdout
    return set(out.split())


def _node_shells(names) -> dict[int, str]:
    """PIDs of live Mininet node shells (`bash ... mininet:<name>`) by name."""
    want = {f"mininet:{n}": n for n in names}
    found = {}
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            with open(f"/proc/{pid}/cmdline", "rb") as f:
                argv = f.read().split(b"\0")
        except OSError:
            continue
        for arg in argv:
            name = want.get(arg.decode(errors="replace"))
            if name:
                found[int(pid)] = name
    return found


def _pids_in_netns(inodes: set[str]) -> set[int]:
    pids = set()
    for pid in filter(str.isdigit, os.listdir("/proc")):
        with contextlib.suppress(OSError):
            if os.readlink(f"/proc/{pid}/ns/net") in inodes:
                pids.add(int(pid))
    return pids


def _is_veth(name: str) -> bool:
    out = subprocess.run(["ip", "-o", "-d", "link", "show", "dev", name],
                         capture_output=True, text=True).stdout
    return " veth " in out


def _delete_leftovers(bridges, ifnames) -> list[str]:
    """Delete those of the given OVS bridges and veths that exist. Only
    OVS bridges and veths: a name that is a real NIC is never touched."""
    removed = []
    for uuid in flowexport.leftovers(bridges):
        flowexport.remove([uuid])
        removed.append(f"flow sample collector set {uuid}")
    for br in sorted(set(bridges) & _list_br()):
        subprocess.run(["ovs-vsctl", "--if-exists", "del-br", br], capture_output=True)
        # A userspace bridge's tap device of the same name should go with it.
        if os.path.exists(f"/sys/class/net/{br}"):
            subprocess.run(["ip", "link", "del", br], capture_output=True)
        removed.append(f"bridge {br}")
    for name in ifnames:
        if os.path.exists(f"/sys/class/net/{name}") and _is_veth(name):
            subprocess.run(["ip", "link", "del", name], capture_output=True)
            removed.append(f"veth {name}")
    return removed


def cleanup_stale(network: model.Network, core: str = CORE) -> list[str]:
    """Remove the bridges and interfaces a crashed lab for this file left.
    Targeted rather than `mn -c`, which would also wreck any other lab
    running on this machine. Returns what it removed."""
    bridges = _bridge_names(network, core)
    live = _node_shells(bridges)
    if live:
        raise LabError(f"bridges {sorted(set(live.values()))} belong to a running "
                       f"Mininet (shell PIDs {sorted(live)}): stop that lab first")
    return _delete_leftovers(bridges, _root_ifnames(network, _host_specs(network), core))


def stop_process_group(proc: subprocess.Popen) -> None:
    """SIGTERM, then SIGKILL after 5 s, to the process group `proc` leads
    (started with start_new_session), so no child of it survives."""
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, signal.SIGTERM)
    try:
        proc.wait(5)
    except subprocess.TimeoutExpired:
        pass
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()


def free_udp_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def free_ports(count: int) -> list[int]:
    socks = [socket.socket() for _ in range(count)]
    try:
        for s in socks:                      # bound together, so all distinct
            s.bind(("127.0.0.1", 0))
        return [s.getsockname()[1] for s in socks]
    finally:
        for s in socks:
            s.close()


@contextlib.contextmanager
def _sigint_ignored():
    """A second Ctrl-C must not cut a teardown short and leave junk behind."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    old = signal.signal(signal.SIGINT, signal.SIG_IGN)
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, old)


def _die_with_parent() -> None:
    """Runs in the controller's child before exec: if the lab process (the
    thread that started the controller, strictly) dies without tearing down
    (SIGKILL, crash), the kernel sends SIGTERM to the controller instead of
    leaving it running."""
    PR_SET_PDEATHSIG = 1
    ctypes.CDLL(None, use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGTERM)


# No proxy for 127.0.0.1, whatever http_proxy says.
_http = urllib.request.build_opener(urllib.request.ProxyHandler({}))


# ------------------------------------------------------------ the lab

class Lab:
    """`with Lab(path) as lab:` a started lab, torn down on exit (also on an
    exception or Ctrl-C). controller=False: no controller, hypervisor bridges
    standalone, forwarding as switch_mode says ('normal' or 'hub').
    controller=False, controller_port=P: bridges in secure mode pointed at
    127.0.0.1:P, for a controller the caller runs (benchmarks of other
    controllers); nothing is installed and no readiness is awaited."""

    def __init__(self, path: str, controller: bool = True, switch_mode: str | None = None,
                 ready_timeout: float = 60.0, controller_args=(), core: str = CORE,
                 controller_port: int | None = None, placement: dict | None = None):
        if controller and switch_mode is not None:
            raise ValueError("switch_mode is only for controller=False")
        if controller_port is not None and (controller or switch_mode is not None):
            raise ValueError("controller_port is only for controller=False, without "
                             "switch_mode")
        self.controller_port = controller_port
        if not controller and controller_port is None:
            switch_mode = switch_mode or "normal"
            if switch_mode not in SWITCH_MODES:
                raise ValueError(f"switch_mode must be one of {SWITCH_MODES}")
        self.path = os.path.abspath(path)
        self.network = model.load(path)          # a bad file fails here
        self.controller, self.switch_mode, self.core = controller, switch_mode, core
        self.ready_timeout = ready_timeout
        self.controller_args = list(controller_args)
        # Where each bound VM's tap is now (None: stopped); the file does not say.
        self.placement = {**default_placement(self.network), **(placement or {})}
        self.net: Mininet | None = None
        self.ofp_port = self.rest_port = self.rest_url = self.flow_port = None
        self.controller_log: str | None = None
        self._proc: subprocess.Popen | None = None
        self._last_hypervisor: dict[str, str] = dict(self.placement)
        self._taps = {vm.name: tap_name(vm) for vm in self.network.vms if vm.bound}
        self._generation: dict[str, int] = {}      # overlapping migrations per VM
        self._extra_ifnames: set[str] = set()      # taps they made
        self._shells: dict[int, str] = {}
        self._netns: set[str] = set()
        self._owns_names = False     # may delete bridges named like ours
        self._configured_ids = False  # remote_ids.configure ran: undo it on close

    # -- life cycle
    def __enter__(self) -> "Lab":
        self.start()
        return self

    def __exit__(self, *exc) -> bool:
        self.close()
        return False

    def start(self) -> None:
        bridges = _bridge_names(self.network, self.core)
        if bridges & _list_br():
            # Raises if a live lab owns them; else they are a crashed run's.
            removed = cleanup_stale(self.network, self.core)
            warn(f"lab: removed what a crashed lab left: {removed}\n")
        taken = sorted(b for b in bridges if os.path.exists(f"/sys/class/net/{b}"))
        if taken:    # e.g. a hypervisor named like a real NIC
            raise LabError(f"{self.network.source}: interfaces {taken} already exist "
                           "on this machine; a bridge cannot take their names")
        self._owns_names = True
        self.controller_log = os.path.join(tempfile.mkdtemp(prefix="lab-"),
                                           "controller.log")
        try:
            if self.controller:
                self.ofp_port, self.rest_port = free_ports(2)
                self.flow_port = free_udp_port()
                self.rest_url = f"http://127.0.0.1:{self.rest_port}"
                self._spawn_controller()
            elif self.controller_port is not None:
                self.ofp_port = self.controller_port
            self.net = build_network(self.network, self.ofp_port, self.core, self.placement)
            self.net.start()
            if self.controller:
                flowexport.configure(self.network, f"127.0.0.1:{self.flow_port}")
            for vm in self.network.vms:
                if vm.iface_id:
                    self._vsctl("set", "Interface", tap_name(vm), *_external_ids(vm))
            nodes = self.net.hosts + self.net.switches + self.net.controllers
            self._shells = {n.pid: n.name for n in nodes}
            self._netns = {os.readlink(f"/proc/{h.pid}/ns/net") for h in self.net.hosts}
            disable_offload(self.net)
            if _has_central_ids(self.network):
                self._configured_ids = True
                remote_ids.configure(self.network, self.core,
                                     _central_ids_port(self.network, self.core),
                                     self.net.get(CENTRAL_IDS), f"{CENTRAL_IDS}-eth0")
            if _has_router(self.network):
                router.configure(self.network, self.net.get(router.ROUTER),
                                 self.net.get(router.OUTSIDE),
                                 [f"{self.core}-p{n}" for n in _router_core_ports(self.network)],
                                 _run, _host_run)
                routes = router.default_routes(self.network)
                for vm in self.network.vms:
                    if vm.segment in routes and vm.ip is not None:   # DHCP says for the rest
                        _host_run(self.net.get(vm.name),
                                  f"ip route add default via {routes[vm.segment]}")
            self._address_ipv6()
            if self.controller and firewall.interfaces(self.network):
                # Without the controller the bridges flood, and a firewall
                # that reflects frames would loop them back: leave it unwired.
                firewall.configure(self.net.get(firewall.HOST), self.network)
            if self.controller:
                self.wait_ready()
            elif self.switch_mode is not None:
                set_switch_mode(self.network, self.switch_mode)
        except BaseException:
            self.close()
            raise

    def _address_ipv6(self) -> None:
        """VMs with ipv6 get their addresses (no DAD: the file says they are
        theirs); a declared link-local replaces the kernel's EUI-64 one."""
        for vm in self.network.vms:
            if vm.ipv6 is None:
                continue
            host, subnet6 = self.net.get(vm.name), self.network.segment(vm.segment).subnet6
            intf = host.defaultIntf().name
            link_local, *others = vm.ipv6
            if link_local != model.eui64_link_local(vm.mac):
                _host_run(host, f"ip -6 addr flush dev {intf} scope link")
                _host_run(host, f"ip -6 addr add {link_local}/64 dev {intf} nodad")
            for address in others:
                prefix = subnet6.prefixlen if subnet6 is not None else 64
                _host_run(host, f"ip -6 addr add {address}/{prefix} dev {intf} nodad")

    def close(self) -> None:
        """Stop everything this lab started; safe to call twice."""
        with _sigint_ignored():
            net, self.net = self.net, None
            try:
                if net is not None:
                    try:
                        net.stop()
                    finally:
                        for c in net.controllers:   # RemoteController.stop() keeps its shell
                            c.terminate()
            finally:
                self.stop_controller()
                self._sweep()
                if self._configured_ids:
                    self._configured_ids = False
                    remote_ids.unconfigure(self.network)

    def _sweep(self) -> None:
        """Kill what outlived net.stop() and delete what it left: a process
        in a host's namespace (a tool that ignored SIGHUP) would keep the
        namespace and its veth alive."""
        if not self._owns_names:
            return
        self._owns_names = False
        leftovers = _pids_in_netns(self._netns)
        live = _node_shells(set(self._shells.values()))
        leftovers |= {pid for pid in self._shells if live.get(pid) == self._shells[pid]}
        for pid in leftovers:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        self._shells, self._netns = {}, set()
        # Its own flow export rows always outlive the bridges: not worth a warning.
        flowexport.remove(flowexport.leftovers(_bridge_names(self.network, self.core)))
        removed = _delete_leftovers(
            _bridge_names(self.network, self.core),
            [*_root_ifnames(self.network, _host_specs(self.network), self.core),
             *sorted(self._extra_ifnames)])
        if leftovers or removed:
            warn(f"lab teardown: killed {sorted(leftovers)}, removed {removed}\n")

    # -- the controller
    def _spawn_controller(self) -> None:
        cmd = [sys.executable, "-m", "controller", "--network", self.path,
               "--ofp-host", "127.0.0.1", "--ofp-port", str(self.ofp_port),
               "--rest-host", "127.0.0.1", "--rest-port", str(self.rest_port),
               *self.controller_args]
        if "--flow-collector" not in self.controller_args:
            cmd += ["--flow-collector", f"127.0.0.1:{self.flow_port}"]
        if "--state-file" not in self.controller_args:
            # A lab's policy changes live and die with the lab (restarts
            # included), never in the repository's shared state file.
            cmd += ["--state-file", os.path.join(os.path.dirname(self.controller_log),
                                                 "policy.json")]
        with open(self.controller_log, "ab") as log:   # restarts append
            log.write(f"--- {time.strftime('%H:%M:%S')} {' '.join(cmd)}\n".encode())
            log.flush()
            self._proc = subprocess.Popen(
                cmd, cwd=REPO, stdin=subprocess.DEVNULL, stdout=log,
                stderr=subprocess.STDOUT, start_new_session=True,
                preexec_fn=_die_with_parent,
                env={**os.environ, "PYTHONUNBUFFERED": "1"})

    def start_controller(self) -> None:
        if not self.controller:
            raise LabError("this lab was built without a controller")
        if self._proc is not None and self._proc.poll() is None:
            raise LabError(f"the controller is already running (PID {self._proc.pid})")
        self._spawn_controller()
        self.wait_ready()

    def stop_controller(self) -> None:
        proc, self._proc = self._proc, None
        if proc is not None:
            stop_process_group(proc)

    def restart_controller(self) -> None:
        self.stop_controller()
        self.start_controller()

    def status(self) -> dict:
        """The controller's health document (GET /api/v1/health)."""
        return self.api("/api/v1/health")

    def api(self, path: str) -> dict:
        """GET a document from the controller's REST API."""
        with _http.open(f"{self.rest_url}{path}", timeout=5) as r:
            return json.load(r)

    def wait_ready(self, timeout: float | None = None) -> dict:
        """Poll the health endpoint until it says ready; LabError otherwise."""
        timeout = self.ready_timeout if timeout is None else timeout
        deadline, last = time.monotonic() + timeout, None
        while time.monotonic() < deadline:
            if self._proc is None or self._proc.poll() is not None:
                code = None if self._proc is None else self._proc.returncode
                raise LabError(f"the controller exited (code {code}); end of "
                               f"{self.controller_log}:\n{self.log_tail()}")
            try:
                last = self.status()
                if last.get("ready"):
                    return last
            except (OSError, ValueError) as e:   # not listening yet, or not JSON
                last = e
            time.sleep(0.2)
        raise LabError(f"the controller was not ready after {timeout:.0f} s "
                       f"(last health: {last!r}); end of {self.controller_log}:\n"
                       f"{self.log_tail()}")

    def log_tail(self, lines: int = 30) -> str:
        """The end of the controller log, without our own health polls."""
        noise = ("GET /api/v1/health", ") accepted ('127.0.0.1'")
        try:
            with open(self.controller_log, errors="replace") as f:
                kept = [ln for ln in f if not any(n in ln for n in noise)]
        except (OSError, TypeError):
            return "(no controller log)"
        return "".join(kept[-lines:])

    def wait_datapath(self) -> None:
        """Return once OVS forwards by the OpenFlow tables as they are now.

        A confirmed change is in the tables; the datapath's cached flows
        follow when the revalidators have re-translated them (README, "What
        a 200 means"). `revalidator/wait` returns at the end of a round,
        which may have begun before the change, so two: the second round
        began after it and re-translated every cached flow."""
        for _ in range(2):
            subprocess.run(["ovs-appctl", "--timeout=30", "revalidator/wait"], check=True,
                           capture_output=True)
        # Two rounds were seen not to be enough: after a quarantine's release
        # a datapath flow cached from it kept dropping for over a second
        # (OVS 3.1, userspace datapath; an open question). Purging the cache
        # makes the next packet take the tables as they are.
        subprocess.run(["ovs-appctl", "--timeout=30", "revalidator/purge"], check=True,
                       capture_output=True)

    def binding(self, vm: str) -> dict:
        """The controller's word on where a VM is (GET /api/v1/vms)."""
        return next(v for v in self.api("/api/v1/vms") if v["name"] == vm)["binding"]

    def wait_bound(self, vm: str, hypervisor: str | None, timeout: float = 10.0) -> None:
        """Wait until the controller has a bound VM where this lab put it (on
        `hypervisor`, at the ofport OVS gave it; None: stopped), every switch
        holds that, and the datapath forwards by it; LabError otherwise."""
        want = (hypervisor, self.ofport(vm), hypervisor is not None)
        deadline = time.monotonic() + timeout
        while True:
            b = self.binding(vm)
            if (b["hypervisor"], b["ofport"], b["up"]) == want and self.status()["ready"]:
                break
            if time.monotonic() > deadline:
                raise LabError(f"{vm}: the controller says {b}, the lab has {want}")
            time.sleep(0.1)
        self.wait_datapath()

    def pin_neighbours(self) -> None:
        """Every VM gets a permanent neighbour entry for every other VM: ARP
        never crosses segments, so a cross-segment ping (a pair allowed, or
        one that must stay isolated) needs no router and fails only for the
        policy's sake."""
        for vm in self.network.vms:
            host = self.host(vm.name)
            for other in self.network.vms:
                if other is not vm:
                    host.cmd(f"ip neigh replace {other.ip} lladdr {other.mac} "
                             f"dev {host.defaultIntf().name} nud permanent")

    # -- what a hypervisor does to a VM's tap (bound VMs only)
    def stop_vm(self, vm: str) -> None:
        """The VM shuts down: its tap leaves the bridge."""
        self._bound(vm)
        if self.placement[vm] is None:
            raise LabError(f"VM {vm} is not running")
        self._vsctl("del-port", self.placement[vm], self._taps[vm])
        self.placement[vm] = None

    def start_vm(self, vm: str, hypervisor: str | None = None) -> None:
        """The VM boots (on `hypervisor`, default where it last ran): its tap
        joins the bridge, and OVS gives it the next free ofport."""
        spec = self._bound(vm)
        if self.placement[vm] is not None:
            raise LabError(f"VM {vm} already runs on {self.placement[vm]}")
        hv = hypervisor or self._last_hypervisor.get(vm) or default_placement(
            self.network)[vm]
        if hv not in {h.name for h in self.network.hypervisors}:
            raise LabError(f"no hypervisor {hv!r} in {self.network.source}")
        tap = self._taps[vm]
        self._vsctl("add-port", hv, tap, *(["--", "set", "Interface", tap,
                                            *_external_ids(spec)] if spec.iface_id else []))
        self.placement[vm] = hv
        self._last_hypervisor[vm] = hv
        announce(self.host(vm), self.network.vm(vm).mac)

    def migrate(self, vm: str, hypervisor: str, overlap: bool = False,
                copy_seconds: float = 0.5) -> None:
        """Live migration. Without overlap the tap leaves its bridge and joins
        another's under a new ofport. With overlap, as libvirt does it: a new
        tap comes up at the destination first (same iface-id), the memory
        copy takes `copy_seconds`, then the guest resumes there (its address
        moves to the new interface and it announces itself with a RARP), and
        then the source tap goes. In one OVSDB two ports cannot share a name,
        so an overlap needs a VM bound by iface_id."""
        if self.placement.get(vm) in (hypervisor, None):
            raise LabError(f"VM {vm} runs on {self.placement.get(vm)}, not elsewhere")
        if not overlap:
            self.stop_vm(vm)
            self.start_vm(vm, hypervisor)
            return
        spec = self._bound(vm)
        if not spec.iface_id:
            raise LabError(f"VM {vm}: a migration with overlap needs iface_id binding (two "
                           "ports of one OVSDB cannot share the interface name)")
        host, old = self.host(vm), self.host(vm).defaultIntf()
        self._generation[vm] = self._generation.get(vm, 0) + 1
        tap, guest = f"{vm}-m{self._generation[vm]}", f"{vm}-eth{self._generation[vm]}"
        self._extra_ifnames.add(tap)
        _run(["ip", "link", "add", tap, "type", "veth", "peer", "name", guest])
        _run(["ip", "link", "set", guest, "netns", str(host.pid)])
        self._vsctl("add-port", hypervisor, tap, "--", "set", "Interface", tap,
                    *_external_ids(spec))
        _run(["ip", "link", "set", tap, "up"])
        # The guest's side stays down until it resumes: a paused guest sends nothing.
        for command in (f"ip link set {guest} address {spec.mac}",
                        f"ethtool -K {guest} tx off"):
            _host_run(host, command)
        time.sleep(copy_seconds)
        # The guest resumes at the destination.
        neighbours = host.cmd(f"ip neigh show dev {old.name} nud permanent").splitlines()
        prefix = host.cmd(f"ip -o -4 addr show dev {old.name}").split()[3]
        _host_run(host, f"ip addr flush dev {old.name}")
        _host_run(host, f"ip link set {old.name} down")
        _host_run(host, f"ip link set {guest} up")
        _host_run(host, f"ip addr add {prefix} dev {guest}")
        for line in neighbours:
            ip_addr, _lladdr, mac = line.split()[:3]
            _host_run(host, f"ip neigh replace {ip_addr} lladdr {mac} dev {guest} "
                            "nud permanent")
        # Mininet's handle on the VM's interface now names the new one.
        del host.nameToIntf[old.name]
        old_tap, old.name = self._taps[vm], guest
        host.nameToIntf[guest] = old
        announce(host, spec.mac)
        time.sleep(copy_seconds)
        self._vsctl("del-port", self.placement[vm], old_tap)
        _run(["ip", "link", "del", old_tap])
        self._taps[vm] = tap
        self.placement[vm] = self._last_hypervisor[vm] = hypervisor

    def ofport(self, vm: str) -> int | None:
        """The ofport OVS gave a VM's tap now (None while it is stopped)."""
        if self.placement.get(vm) is None:
            return None
        out = self._vsctl("get", "Interface", self._taps[vm], "ofport")
        return int(out)

    def _bound(self, vm: str) -> model.VM:
        spec = self.network.vm(vm)
        if not spec.bound:
            raise LabError(f"VM {vm} is placed by the file (hypervisor and port); only "
                           "VMs bound by interface or iface_id move")
        return spec

    @staticmethod
    def _vsctl(*args: str) -> str:
        done = subprocess.run(["ovs-vsctl", "--timeout=10", *args], capture_output=True,
                              text=True)
        if done.returncode:
            raise LabError(f"ovs-vsctl {' '.join(args)}: {done.stderr.strip()}")
        return done.stdout.strip()

    # -- access
    def host(self, name: str):
        if self.net is None:
            raise LabError("the lab is not running")
        return self.net[name]

    @property
    def controller_pid(self) -> int | None:
        return self._proc.pid if self._proc is not None else None

    def core_port(self, hypervisor: str) -> int:
        """The core switch's OpenFlow port facing a hypervisor's uplink."""
        for n, hv in enumerate(_uplinked(self.network), start=1):
            if hv.name == hypervisor:
                return n
        raise KeyError(f"hypervisor {hypervisor!r} has no uplink to the core")


def lab(path: str, **kw) -> Lab:
    """Lab(path, **kw), for `with lab(path) as l:`."""
    return Lab(path, **kw)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(prog="python -m topologies.lab",
                                 description="Bring up a Mininet lab for a network file "
                                             "and open Mininet's CLI.")
    ap.add_argument("network", help="the network file (YAML)")
    ap.add_argument("--no-controller", action="store_true",
                    help="no controller: standalone hypervisor bridges")
    ap.add_argument("--switch-mode", choices=SWITCH_MODES,
                    help="with --no-controller: how hypervisor bridges forward "
                         "(default normal)")
    args = ap.parse_args(argv)
    if args.switch_mode and not args.no_controller:
        ap.error("--switch-mode needs --no-controller")
    from mininet.cli import CLI
    try:
        with Lab(args.network, controller=not args.no_controller,
                 switch_mode=args.switch_mode) as the_lab:
            if the_lab.controller:
                print(f"controller: {the_lab.rest_url}  log: {the_lab.controller_log}")
            setLogLevel("output")                # the CLI prints at this level
            CLI(the_lab.net)
            setLogLevel("warning")
    except (ValueError, LabError) as e:          # NetworkFileError is a ValueError
        print(f"error: {e}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
