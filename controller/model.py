"""The network file: parse, validate, and hold it as immutable objects.

Pure Python, no Ryu. Every error names the file, the place in it (a dotted
path such as ``vms.web1.segment``) and what is wrong, and is raised before
anything is programmed.
"""
from __future__ import annotations

import ipaddress
import re
from dataclasses import dataclass, field, replace
from typing import Any, Mapping

import yaml

from .policy import Policy, PolicyError, parse as parse_policy
from .response import Response, ResponseError, parse_response

MAX_VLAN = 4094
MAX_PORT = 0xFFFFFF00              # OpenFlow 1.3: real ports are below OFPP_MAX
NAME_RE = re.compile(r"^[A-Za-z][A-Za-z0-9_]{0,14}$")
MAC_RE = re.compile(r"^[0-9a-f]{2}(:[0-9a-f]{2}){5}$")
BINDING_RE = re.compile(r"^[A-Za-z0-9._:@-]+$")    # interface names, iface-ids
IFNAMSIZ = 15                      # Linux: an interface name has at most 15 characters
OVSDB_RE = re.compile(r"^(tcp:[^:\s]+:\d{1,5}|tcp:\[[0-9A-Fa-f:.]+\]:\d{1,5}|unix:/\S+)$")


class NetworkFileError(ValueError):
    """A network file that cannot be used; the message says where and why."""

    def __init__(self, source: str, place: str, problem: str):
        self.source, self.place, self.problem = source, place, problem
        where = f"{source}: {place}" if place else source
        super().__init__(f"{where}: {problem}")


@dataclass(frozen=True)
class Gateway:
    """A router or firewall interface on the physical network, reached
    through the uplink on its segment's VLAN: the segment's way out."""
    mac: str
    ip: ipaddress.IPv4Address | None = None
    ipv6: ipaddress.IPv6Address | None = None


@dataclass(frozen=True)
class Segment:
    name: str
    vlan: int
    subnet: ipaddress.IPv4Network | None = None
    gateways: tuple[Gateway, ...] = ()
    dhcp_uplink: bool = False      # a DHCP server or relay on the physical network serves it
    subnet6: ipaddress.IPv6Network | None = None


@dataclass(frozen=True)
class LearningPort:
    """A VM port whose hosts are not in the file: MACs are learned, capped."""
    port: int
    segment: str
    max_hosts: int


@dataclass(frozen=True)
class Hypervisor:
    name: str
    dpid: int
    uplink_port: int | None
    firewall_port: int | None = None
    ids_port: int | None = None
    learning_ports: tuple[LearningPort, ...] = ()
    ovsdb: str | None = None        # where its OVSDB serves (iface-ids of VM taps)
    # The networks its bridge may connect from (OpenFlow); () = any. Plain
    # TCP proves nothing else about who is on the other end.
    connect_from: tuple = ()
    # Where it sends mirror copies encapsulated to a remote IDS (the tunnel's
    # OpenFlow port), when the network has mirror.erspan or mirror.gre and
    # it has no IDS port of its own.
    mirror_port: int | None = None

    def accepts_connection_from(self, address: str) -> bool:
        if not self.connect_from:
            return True
        try:
            ip = ipaddress.ip_address(address)
        except ValueError:
            return False
        return any(ip in net for net in self.connect_from)

    @property
    def observation_domain(self) -> int:
        """Its IPFIX observation domain (the parser checks they differ)."""
        return self.dpid & 0xFFFFFFFF

    def special_ports(self) -> dict[int, str]:
        """Infrastructure ports by number -> role."""
        roles = {"uplink_port": self.uplink_port,
                 "firewall_port": self.firewall_port,
                 "ids_port": self.ids_port,
                 "mirror_port": self.mirror_port}
        return {port: role for role, port in roles.items() if port is not None}


@dataclass(frozen=True)
class VM:
    """A VM is placed by the file (hypervisor + port) or bound by the
    management plane (interface or iface_id): then hypervisor and port are
    None here and known only at run time (controller/binding.py)."""
    name: str
    hypervisor: str | None
    port: int | None
    segment: str
    mac: str
    ip: ipaddress.IPv4Address | None    # None: `ip: dhcp`, its lease decides (Network.leased)
    interface: str | None = None     # the OVS port/interface name
    iface_id: str | None = None      # the Interface's external_ids:iface-id
    # It forwards for others: may send from and receive for any IP address
    # (its MAC, and ARP for its own address, still pinned); a gateway of its
    # segment, so its traffic is north-south (policy.external).
    router: bool = False
    dhcp: bool = False               # gets its address by DHCP (ip: dhcp)
    dhcp_server: bool = False        # its DHCP server messages are trusted (v4 and v6)
    # IPv6: None = none at all (its IPv6 is dropped); else its addresses,
    # link-local first (EUI-64 from its MAC unless declared).
    ipv6: tuple[ipaddress.IPv6Address, ...] | None = None
    ipv6_router: bool = False        # may send Router Advertisements and redirects

    @property
    def address(self) -> str:
        return "dhcp" if self.ip is None else str(self.ip)

    @property
    def bound(self) -> bool:
        return self.port is None


@dataclass(frozen=True)
class Options:
    packet_in_rate: int = 100          # packets/s the controller accepts
    packet_in_burst: int = 50
    max_hosts_per_port: int = 4        # default cap for learning ports
    learned_idle_timeout: int = 300    # seconds before a silent learned MAC expires
    # A learning port offering more new MACs than this within a second is a
    # flood: banned from learning for learn_ban_seconds, and what it learned
    # in that second is forgotten, so the flood holds none of its slots.
    learn_ban_rate: int = 10
    learn_ban_seconds: int = 30
    # DHCP messages per second each hypervisor snoops (trusted servers' and
    # clients' with `ip: dhcp`); more are dropped, and the clients retry.
    dhcp_rate: int = 100


@dataclass(frozen=True)
class Steering:
    """What happens when the firewall is gone, and how that is noticed. A
    steered frame of segment S leaves the firewall port tagged with S's VLAN
    and must come back through the same port with the same tag."""
    fail: str = "closed"              # closed: drop steered traffic; open: deliver it
    probe_interval: float = 1.0       # seconds between firewall health probes
    probe_misses: int = 3             # probes lost in a row before it counts as down


@dataclass(frozen=True)
class MirrorTunnel:
    """Copies encapsulated to a remote IDS address, so the physical network
    only has to route IP to it: nothing to learn or flood in a VLAN."""
    kind: str                            # "erspan" (type II) or "gre"
    remote_ip: ipaddress.IPv4Address     # the IDS's capture address
    port: int                            # the tunnel's OpenFlow port on each hypervisor
    session: int = 1                     # ERSPAN session id (GRE: key)


@dataclass(frozen=True)
class FlowRecords:
    """IPFIX sampling on every entry that decides a frame's fate; the
    switches export to the controller's collector (apps/collector.py)
    through the Flow_Sample_Collector_Set with this id on each bridge."""
    collector_set: int = 1
    denied: float = 1.0        # probability a refused packet is sampled
    allowed: float = 0.01      # ... a forwarded, copied or steered one

    def probability(self, denied: bool) -> int:
        """OVS's form: out of 65535; 0 = no sample action."""
        return round((self.denied if denied else self.allowed) * 65535)


@dataclass(frozen=True)
class Network:
    source: str
    segments: tuple[Segment, ...]
    hypervisors: tuple[Hypervisor, ...]
    vms: tuple[VM, ...]
    policy: Policy = field(default_factory=Policy)
    options: Options = field(default_factory=Options)
    mirror_vlan: int | None = None     # carries copies to a remote IDS over the uplinks
    steering: "Steering" = field(default_factory=lambda: Steering())
    mirror_tunnel: MirrorTunnel | None = None
    flow_records: FlowRecords = field(default_factory=FlowRecords)
    response: Response = field(default_factory=Response)   # how IDS alerts act

    def segment(self, name: str) -> Segment:
        return next(s for s in self.segments if s.name == name)

    def hypervisor(self, name: str) -> Hypervisor:
        return next(h for h in self.hypervisors if h.name == name)

    def hypervisor_by_dpid(self, dpid: int) -> Hypervisor | None:
        return next((h for h in self.hypervisors if h.dpid == dpid), None)

    def vm(self, name: str) -> VM:
        return next(v for v in self.vms if v.name == name)

    def leased(self, leases: Mapping[str, str]) -> "Network":
        """The network with every `ip: dhcp` VM at its lease's address
        (`leases`: vm -> IPv4 text); without one it keeps none."""
        if not leases:
            return self
        return replace(self, vms=tuple(
            replace(v, ip=ipaddress.IPv4Address(leases[v.name]))
            if v.dhcp and v.name in leases else v for v in self.vms))

    def placed(self, locations: Mapping[str, tuple[str, int]]) -> "Network":
        """The network with every bound VM where it runs now (`locations`:
        vm -> (hypervisor, ofport)); bound VMs that are not up keep no place."""
        return replace(self, vms=tuple(
            replace(v, hypervisor=locations[v.name][0], port=locations[v.name][1])
            if v.bound and v.name in locations else v for v in self.vms))

    def with_policy(self, policy: Policy) -> "Network":
        """The same network under another policy; PolicyError if it cannot work."""
        check_policy(self, policy)
        return replace(self, policy=policy)

    def with_response(self, response: Response) -> "Network":
        """The same network with other response rules; ResponseError if they
        cannot work here."""
        check_response(self, response)
        return replace(self, response=response)


def eui64_link_local(mac: str) -> ipaddress.IPv6Address:
    """The link-local address a host forms from its MAC (modified EUI-64)."""
    b = bytes.fromhex(mac.replace(":", ""))
    iid = bytes([b[0] ^ 0x02]) + b[1:3] + b"\xff\xfe" + b[3:6]
    return ipaddress.IPv6Address(b"\xfe\x80" + bytes(6) + iid)


def check_policy(net: Network, policy: Policy) -> None:
    """What a policy needs of the network: the VMs it names, somewhere to
    send mirror copies, a firewall port for steered traffic."""
    names = {vm.name for vm in net.vms}
    for vm, rule in policy.vms:
        if vm not in names:
            raise PolicyError(f"policy.vms.{vm}", f"there is no VM {vm!r} (it has a "
                              f"{rule.mode} rule: release it first)")
    for hv in net.hypervisors:
        if policy.mirrors_anything and not reaches_ids(net, hv):
            raise PolicyError("policy", f"it mirrors traffic, but {_no_ids(hv)}")
        if policy.steers_anything and hv.firewall_port is None:
            raise PolicyError("policy", f"it steers traffic, but hypervisor {hv.name} has "
                              "no firewall_port")


def reaches_ids(net: Network, hv: Hypervisor) -> bool:
    return hv.ids_port is not None or hv.mirror_port is not None or (
        net.mirror_vlan is not None and hv.uplink_port is not None)


def _no_ids(hv: Hypervisor) -> str:
    return (f"hypervisor {hv.name} has no ids_port, nor a mirror tunnel (mirror.erspan or "
            "mirror.gre), nor an uplink and a mirror.vlan to reach a remote IDS")


def check_response(net: Network, response: Response) -> None:
    """What response rules need of the network: the VMs their allowlist
    names (a typo there would let the IDS act on a DNS server), and
    somewhere to send copies if a rule mirrors."""
    names = {vm.name for vm in net.vms}
    unknown = sorted(response.allowlist - names)
    if unknown:
        raise ResponseError(f"response.allowlist: there is no VM {unknown[0]!r} (an "
                            "allowlisted VM that is removed must leave the list first)")
    for i, rule in enumerate(response.rules):
        lacking = [hv for hv in net.hypervisors if not reaches_ids(net, hv)]
        if rule.action == "mirror" and lacking:
            raise ResponseError(f"response.rules[{i}].action: it mirrors, but "
                                f"{_no_ids(lacking[0])}")


# ---------------------------------------------------------------- parsing

def load(path: str) -> Network:
    """Read and validate a network file; raises NetworkFileError."""
    return from_document(read_document(path), path)


def read_document(path: str):
    """A network file's YAML, not yet validated; NetworkFileError if it
    cannot be read or is not YAML."""
    try:
        with open(path, encoding="utf-8") as f:
            text = f.read()
    except OSError as e:
        raise NetworkFileError(path, "", f"cannot read: {e.strerror}") from None
    except UnicodeDecodeError as e:
        line = e.object[:e.start].count(b"\n") + 1
        raise NetworkFileError(path, f"line {line}", f"not UTF-8 text (byte 0x{e.object[e.start]:02x} "
                               f"at offset {e.start})") from None
    return _yaml(text, path)


def from_document(doc, source: str, inventory: Mapping | None = None) -> Network:
    """Validate a network document. `inventory`: VMs changed at run time,
    on top of the document's (name -> the VM's body, or None: removed);
    checked exactly as if the file said so."""
    if inventory and isinstance(doc, dict) and isinstance(doc.get("vms"), dict):
        vms = {**doc["vms"], **inventory}
        doc = {**doc, "vms": {name: body for name, body in vms.items() if body is not None}}
    return _Parser(source).network(doc)


class _StrictLoader(getattr(yaml, "CSafeLoader", yaml.SafeLoader)):
    """A SafeLoader that refuses a key given twice in one mapping: PyYAML
    would keep the last one, so a copy-pasted VM would silently replace
    another. libyaml's parser when PyYAML has it: a 10,000-VM file loads in
    a tenth of the time."""

    def construct_mapping(self, node, deep=False):
        seen = {}
        for key_node, _ in node.value:
            key = self.construct_object(key_node, deep=deep)
            try:
                if key in seen:
                    mark = key_node.start_mark
                    raise NetworkFileError(
                        self.name, f"line {mark.line + 1}, column {mark.column + 1}",
                        f"key {key!r} is given twice in one mapping (first at "
                        f"line {seen[key]})")
                seen[key] = key_node.start_mark.line + 1
            except TypeError:
                pass      # an unhashable key; construct_mapping reports it
        return super().construct_mapping(node, deep=deep)


def parse(text: str, source: str = "<string>") -> Network:
    return _Parser(source).network(_yaml(text, source))


def _yaml(text: str, source: str):
    try:
        loader = _StrictLoader(text)
        loader.name = source
        try:
            doc = loader.get_single_data()
        finally:
            loader.dispose()
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        place = f"line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        problem = getattr(e, "problem", None) or str(e)
        raise NetworkFileError(source, place, f"YAML syntax error: {problem}") from None
    return doc


class _Parser:
    def __init__(self, source: str):
        self.source = source

    def fail(self, place: str, problem: str):
        raise NetworkFileError(self.source, place, problem)

    # -- typed field readers
    def mapping(self, value: Any, place: str, required=(), optional=()) -> Mapping:
        if not isinstance(value, dict):
            self.fail(place, f"must be a mapping, got {type(value).__name__}")
        for key in value:
            if key not in required and key not in optional:
                allowed = ", ".join(list(required) + list(optional))
                self.fail(f"{place}.{key}" if place else str(key),
                          f"unknown key (allowed: {allowed})")
        for key in required:
            if key not in value:
                self.fail(place or "top level", f"missing required key '{key}'")
        return value

    def integer(self, value: Any, place: str, low: int, high: int) -> int:
        if isinstance(value, bool) or not isinstance(value, int):
            self.fail(place, f"must be an integer, got {value!r}")
        if not low <= value <= high:
            self.fail(place, f"{value} is out of range {low}..{high}")
        return value

    def name(self, value: Any, place: str) -> str:
        if not isinstance(value, str) or not NAME_RE.match(value):
            self.fail(place, f"invalid name {value!r}: use a letter then up to 14 "
                             "letters, digits or underscores")
        return value

    def reference(self, value: Any, known, what: str, place: str) -> str:
        """A name that must refer to something declared elsewhere in the file."""
        if not isinstance(value, str) or value not in known:
            self.fail(place, f"unknown {what} {value!r}")
        return value

    def names(self, section: Any, place: str) -> Mapping:
        # Any key is allowed (keys() is a set: a list would make 10,000 VMs quadratic).
        section = self.mapping(section if section is not None else {}, place,
                               optional=section.keys() if isinstance(section, dict) else ())
        for key in section:
            self.name(key, f"{place}.{key}")
        return section

    # -- sections
    def network(self, doc: Any) -> Network:
        if doc is None:
            self.fail("", "the file is empty")
        doc = self.mapping(doc, "", required=("segments", "hypervisors", "vms"),
                           optional=("policy", "options", "mirror", "steering", "ovsdb",
                                     "flow_records", "response"))
        options = self.options(doc.get("options") or {})
        segments = self.segments(doc["segments"])
        seg_names = {s.name for s in segments}
        default_ovsdb = None
        if "ovsdb" in doc:
            default_ovsdb = self.ovsdb_address(doc["ovsdb"], "ovsdb")
        mirror_vlan, tunnel = self.mirror(doc.get("mirror") or {}, segments)
        hypervisors = self.hypervisors(doc["hypervisors"], seg_names, options, default_ovsdb,
                                       tunnel)
        vms = self.vms(doc["vms"], segments, hypervisors)
        for vm in vms:
            lacking = [hv.name for hv in hypervisors if hv.ovsdb is None]
            if vm.iface_id and lacking:
                self.fail(f"vms.{vm.name}.iface_id", "binding by iface_id reads OVSDB, but "
                          f"hypervisor {lacking[0]} has no ovsdb address (give "
                          "hypervisors.NAME.ovsdb, or ovsdb: at the top for all)")
        steering = self.steering(doc.get("steering") or {})
        flow_records = self.flow_records(doc.get("flow_records") or {}, hypervisors)
        net = Network(self.source, segments, hypervisors, vms, Policy(), options,
                      mirror_vlan, steering, tunnel, flow_records)
        try:
            net = net.with_policy(parse_policy(doc.get("policy"), seg_names,
                                               {vm.name for vm in vms}))
            return net.with_response(parse_response(doc.get("response")))
        except (PolicyError, ResponseError) as e:
            self.fail(e.place, e.problem)

    def mirror(self, raw: Any, segments) -> tuple[int | None, MirrorTunnel | None]:
        """mirror.vlan (an RSPAN VLAN over the uplinks) or one tunnel kind."""
        raw = self.mapping(raw, "mirror", optional=("vlan", "erspan", "gre"))
        if len(raw) > 1:
            self.fail("mirror", f"give one way to reach the remote IDS, not {sorted(raw)}")
        if "vlan" in raw:
            vlan = self.integer(raw["vlan"], "mirror.vlan", 1, MAX_VLAN)
            for seg in segments:
                if seg.vlan == vlan:
                    self.fail("mirror.vlan", f"VLAN {vlan} is already used by "
                                             f"segment '{seg.name}'")
            return vlan, None
        for kind in ("erspan", "gre"):
            if kind in raw:
                place = f"mirror.{kind}"
                body = self.mapping(raw[kind], place, required=("remote_ip", "port"),
                                    optional=("session",))
                try:
                    remote = ipaddress.IPv4Address(str(body["remote_ip"]))
                except ValueError:
                    self.fail(f"{place}.remote_ip", f"not an IPv4 address: "
                                                    f"{body['remote_ip']!r}")
                if remote.is_multicast or remote.is_unspecified or remote.is_loopback:
                    self.fail(f"{place}.remote_ip", f"{remote} is not a unicast address "
                                                    "an IDS can have")
                # ERSPAN type II carries a 10-bit session id; a GRE key is 32 bits.
                top = 1023 if kind == "erspan" else 2**32 - 1
                return None, MirrorTunnel(
                    kind, remote, self.integer(body["port"], f"{place}.port", 1, MAX_PORT),
                    self.integer(body.get("session", 1), f"{place}.session", 1, top))
        return None, None

    def options(self, raw: Any) -> Options:
        raw = self.mapping(raw, "options", optional=Options.__dataclass_fields__)
        values = {key: self.integer(raw[key], f"options.{key}", 1, 1_000_000)
                  for key in raw}
        return Options(**values)

    def flow_records(self, raw: Any, hypervisors) -> FlowRecords:
        raw = self.mapping(raw, "flow_records",
                           optional=("collector_set", "denied", "allowed"))
        values = {}
        if "collector_set" in raw:
            values["collector_set"] = self.integer(raw["collector_set"],
                                                   "flow_records.collector_set", 1, 2**32 - 1)
        for key in ("denied", "allowed"):
            if key in raw:
                p = raw[key]
                if isinstance(p, bool) or not isinstance(p, (int, float)) or not 0 <= p <= 1:
                    self.fail(f"flow_records.{key}", f"must be a probability from 0 to 1, "
                                                     f"got {p!r}")
                values[key] = float(p)
        # The observation domain of a hypervisor's records is its dpid's low
        # 32 bits (IPFIX has no more): they must tell hypervisors apart.
        seen = {}
        for hv in hypervisors:
            other = seen.setdefault(hv.dpid & 0xFFFFFFFF, hv.name)
            if other != hv.name:
                self.fail(f"hypervisors.{hv.name}.dpid", f"its low 32 bits equal "
                          f"{other}'s: flow records could not tell them apart")
        return FlowRecords(**values)

    def steering(self, raw: Any) -> Steering:
        raw = self.mapping(raw, "steering", optional=("fail", "probe_interval",
                                                      "probe_misses"))
        fail = raw.get("fail", "closed")
        if fail not in ("closed", "open"):
            self.fail("steering.fail", f"must be closed or open, got {fail!r}")
        interval = raw.get("probe_interval", 1.0)
        if isinstance(interval, bool) or not isinstance(interval, (int, float)) \
                or not 0.1 <= interval <= 60:
            self.fail("steering.probe_interval", f"must be 0.1..60 seconds, got {interval!r}")
        misses = self.integer(raw.get("probe_misses", 3), "steering.probe_misses", 1, 100)
        return Steering(fail, float(interval), misses)

    def segments(self, raw: Any) -> tuple[Segment, ...]:
        raw = self.names(raw, "segments")
        if not raw:
            self.fail("segments", "at least one segment is needed")
        out, by_vlan = [], {}
        for name, body in raw.items():
            place = f"segments.{name}"
            body = self.mapping(body, place, required=("vlan",),
                                optional=("subnet", "gateways", "dhcp", "subnet6"))
            vlan = self.integer(body["vlan"], f"{place}.vlan", 1, MAX_VLAN)
            if vlan in by_vlan:
                self.fail(f"{place}.vlan", f"VLAN {vlan} is already used by segment "
                                           f"'{by_vlan[vlan]}'")
            by_vlan[vlan] = name
            subnet = self.subnet(body, "subnet", ipaddress.IPv4Network, place)
            subnet6 = self.subnet(body, "subnet6", ipaddress.IPv6Network, place)
            dhcp = body.get("dhcp")
            if dhcp not in (None, "uplink"):
                self.fail(f"{place}.dhcp", f"must be uplink (a server or relay on the "
                                           f"physical network), got {dhcp!r}")
            out.append(Segment(name, vlan, subnet,
                               self.gateways(body.get("gateways"), f"{place}.gateways", name,
                                             subnet, subnet6), dhcp == "uplink", subnet6))
        return tuple(out)

    def subnet(self, body: dict, key: str, kind, place: str):
        """body[key] as an IPv4Network or IPv6Network (kind); None if absent."""
        if key not in body:
            return None
        try:
            return kind(str(body[key]))
        except ValueError as e:
            version = "IPv4" if kind is ipaddress.IPv4Network else "IPv6"
            self.fail(f"{place}.{key}", f"not an {version} network: {e}")

    def gateways(self, raw: Any, place: str, segment: str, subnet,
                 subnet6=None) -> tuple[Gateway, ...]:
        if raw is None:
            return ()
        if not isinstance(raw, list) or not raw:
            self.fail(place, "must be a non-empty list of {mac: ..., ip: ...}")
        out, macs = [], set()
        for i, body in enumerate(raw):
            where = f"{place}[{i}]"
            body = self.mapping(body, where, required=("mac",), optional=("ip", "ipv6"))
            mac = self.mac(body["mac"], f"{where}.mac")
            if mac in macs:
                self.fail(f"{where}.mac", f"{mac} is already a gateway of this segment")
            macs.add(mac)
            ip = None
            if "ip" in body:
                ip = self.host_ip(body["ip"], f"{where}.ip", segment, subnet)
            ipv6 = None
            if "ipv6" in body:     # a router's link-local is what its RAs come from
                ipv6 = self.ipv6_address(body["ipv6"], f"{where}.ipv6", segment, subnet6,
                                         link_local_ok=True)
            out.append(Gateway(mac, ip, ipv6))
        return tuple(out)

    def mac(self, value: Any, place: str) -> str:
        """A unicast MAC address, as lower-case text."""
        if isinstance(value, int):
            self.fail(place, "YAML read this MAC as a number: put it in quotes")
        mac = str(value).lower()
        if not MAC_RE.match(mac):
            self.fail(place, f"not a MAC address: {value!r}")
        if int(mac[:2], 16) & 1:
            self.fail(place, f"{mac} is a multicast address")
        if mac == "00:00:00:00:00:00":
            self.fail(place, "the all-zero MAC is not a host address")
        return mac

    def ipv6_address(self, value: Any, place: str, segment: str, subnet6,
                     link_local_ok: bool = False) -> ipaddress.IPv6Address:
        """A unicast IPv6 host address (global or unique-local; link-local
        only where asked), inside the segment's subnet6 when it has one."""
        try:
            ip = ipaddress.IPv6Address(str(value))
        except ValueError:
            self.fail(place, f"not an IPv6 address: {value!r}")
        if ip.is_multicast or ip.is_unspecified or ip.is_loopback:
            self.fail(place, f"{ip} is not a host address")
        if ip.is_link_local:
            if not link_local_ok:
                self.fail(place, f"{ip} is link-local: a VM's link-local comes from its MAC "
                                 "(or ipv6_link_local)")
            return ip
        if ip.ipv4_mapped is not None:
            self.fail(place, f"{ip} is an IPv4-mapped address")
        if subnet6 is not None and ip not in subnet6:
            self.fail(place, f"{ip} is outside segment '{segment}' subnet6 {subnet6}")
        return ip

    def host_ip(self, value: Any, place: str, segment: str, subnet) -> ipaddress.IPv4Address:
        """An IPv4 host address, inside the segment's `subnet` when it has one."""
        try:
            ip = ipaddress.IPv4Address(str(value))
        except ValueError:
            self.fail(place, f"not an IPv4 address: {value!r}")
        if ip.is_multicast or ip.is_unspecified or ip == ipaddress.IPv4Address(
                "255.255.255.255"):
            self.fail(place, f"{ip} is not a host address")
        if subnet is not None:
            if ip not in subnet:
                self.fail(place, f"{ip} is outside segment '{segment}' subnet {subnet}")
            if subnet.prefixlen < 31 and ip in (subnet.network_address,
                                               subnet.broadcast_address):
                what = "network" if ip == subnet.network_address else "broadcast"
                self.fail(place, f"{ip} is the {what} address of segment '{segment}' "
                                 f"subnet {subnet}")
        return ip

    def ovsdb_address(self, value: Any, place: str) -> str:
        if not isinstance(value, str) or not OVSDB_RE.match(value):
            self.fail(place, f"invalid OVSDB address {value!r}: tcp:HOST:PORT or unix:PATH")
        return value

    def hypervisors(self, raw: Any, seg_names: set, options: Options,
                    default_ovsdb: str | None = None, tunnel: MirrorTunnel | None = None):
        raw = self.names(raw, "hypervisors")
        if not raw:
            self.fail("hypervisors", "at least one hypervisor is needed")
        out, by_dpid = [], {}
        for name, body in raw.items():
            place = f"hypervisors.{name}"
            body = self.mapping(body, place, required=("dpid",),
                                optional=("uplink_port", "firewall_port", "ids_port",
                                          "mirror_port", "learning_ports", "ovsdb",
                                          "connect_from"))
            dpid = body["dpid"]
            if isinstance(dpid, str):
                try:
                    dpid = int(dpid.replace(":", ""), 16)
                except ValueError:
                    self.fail(f"{place}.dpid", f"not a datapath id: {dpid!r}")
            dpid = self.integer(dpid, f"{place}.dpid", 1, 2**64 - 1)
            if dpid in by_dpid:
                self.fail(f"{place}.dpid", f"datapath id {dpid} is already used by "
                                           f"hypervisor '{by_dpid[dpid]}'")
            by_dpid[dpid] = name
            ports = {}
            for role in ("uplink_port", "firewall_port", "ids_port"):
                if body.get(role) is not None:
                    port = self.integer(body[role], f"{place}.{role}", 1, MAX_PORT)
                    if port in ports:
                        self.fail(f"{place}.{role}", f"port {port} is already the "
                                                     f"{ports[port]}")
                    ports[port] = role
            mirror_port = None
            if "mirror_port" in body and tunnel is None:
                self.fail(f"{place}.mirror_port", "there is no mirror.erspan or mirror.gre "
                                                  "tunnel for it")
            if "mirror_port" in body and body.get("ids_port") is not None:
                self.fail(f"{place}.mirror_port", "it has an ids_port: its copies go there")
            if tunnel is not None and body.get("ids_port") is None:
                # The tunnel port: the network's number unless this host's own.
                mirror_port = self.integer(body.get("mirror_port", tunnel.port),
                                           f"{place}.mirror_port", 1, MAX_PORT)
                if mirror_port in ports:
                    self.fail(f"{place}.mirror_port", f"port {mirror_port} is already "
                                                      f"the {ports[mirror_port]}")
                ports[mirror_port] = "mirror_port"
            learning = []
            for i, lp in enumerate(body.get("learning_ports") or []):
                lplace = f"{place}.learning_ports[{i}]"
                lp = self.mapping(lp, lplace, required=("port", "segment"),
                                  optional=("max_hosts",))
                port = self.integer(lp["port"], f"{lplace}.port", 1, MAX_PORT)
                if port in ports:
                    self.fail(f"{lplace}.port", f"port {port} is already the {ports[port]}")
                ports[port] = "learning port"
                self.reference(lp["segment"], seg_names, "segment", f"{lplace}.segment")
                cap = self.integer(lp.get("max_hosts", options.max_hosts_per_port),
                                   f"{lplace}.max_hosts", 1, 4096)
                learning.append(LearningPort(port, lp["segment"], cap))
            ovsdb = default_ovsdb
            if "ovsdb" in body:
                ovsdb = self.ovsdb_address(body["ovsdb"], f"{place}.ovsdb")
            out.append(Hypervisor(name, dpid, body.get("uplink_port"),
                                  body.get("firewall_port"), body.get("ids_port"),
                                  tuple(learning), ovsdb,
                                  self.networks(body.get("connect_from"),
                                                f"{place}.connect_from"), mirror_port))
        return tuple(out)

    def networks(self, raw: Any, place: str) -> tuple:
        """A list of addresses or networks (10.0.0.5, 10.0.0.0/24, fd00::/64)."""
        if raw is None:
            return ()
        if not isinstance(raw, list) or not raw:
            self.fail(place, "must be a non-empty list of addresses or networks")
        out = []
        for i, item in enumerate(raw):
            try:
                out.append(ipaddress.ip_network(str(item), strict=False))
            except ValueError:
                self.fail(f"{place}[{i}]", f"not an address or network: {item!r}")
        return tuple(out)

    def vms(self, raw: Any, segments, hypervisors) -> tuple[VM, ...]:
        raw = self.names(raw, "vms")
        segs = {s.name: s for s in segments}
        hvs = {h.name: h for h in hypervisors}
        taken_ports = {(h.name, p): role for h in hypervisors
                       for p, role in h.special_ports().items()}
        taken_ports.update({(h.name, lp.port): "a learning port"
                            for h in hypervisors for lp in h.learning_ports})
        by_mac, by_ip, by_binding, out = {}, {}, {}, []
        for name, body in raw.items():
            place = f"vms.{name}"
            body = self.mapping(body, place, required=("segment", "mac", "ip"),
                                optional=("hypervisor", "port", "interface", "iface_id",
                                          "router", "dhcp_server", "ipv6", "ipv6_link_local",
                                          "ipv6_router"))
            self.reference(body["segment"], segs, "segment", f"{place}.segment")
            hv, port, interface, iface_id = self.vm_binding(body, place, hvs, by_binding)
            if port is not None:
                if (hv, port) in taken_ports:
                    self.fail(f"{place}.port", f"port {port} on {hv} is already "
                                               f"{taken_ports[(hv, port)]}")
                taken_ports[(hv, port)] = f"used by VM '{name}'"
            else:
                by_binding[(interface, iface_id)] = name
            mac = self.mac(body["mac"], f"{place}.mac")
            if mac in by_mac:
                self.fail(f"{place}.mac", f"{mac} is already used by {by_mac[mac]}")
            by_mac[mac] = f"VM '{name}'"
            seg = segs[body["segment"]]
            dhcp, ip = body["ip"] == "dhcp", None
            if not dhcp:
                ip = self.host_ip(body["ip"], f"{place}.ip", seg.name, seg.subnet)
                if ip in by_ip:
                    self.fail(f"{place}.ip", f"{ip} is already used by {by_ip[ip]}")
                by_ip[ip] = f"VM '{name}'"
            router, server = (self.boolean(body, key, place) for key in ("router",
                                                                          "dhcp_server"))
            if server and dhcp:
                self.fail(f"{place}.dhcp_server", "a DHCP server needs a fixed address, "
                                                  "not ip: dhcp")
            ipv6 = self.vm_ipv6(body, name, seg, mac, by_ip)
            ipv6_router = self.boolean(body, "ipv6_router", place)
            if ipv6_router and ipv6 is None:
                self.fail(f"{place}.ipv6_router", "an IPv6 router needs IPv6 (ipv6: [...])")
            out.append(VM(name, hv, port, body["segment"], mac, ip, interface, iface_id,
                          router, dhcp, server, ipv6, ipv6_router))
        self.gateways_apart(segments, by_mac, by_ip)
        return tuple(out)

    def vm_ipv6(self, body: dict, name: str, seg: Segment, mac: str, taken: dict):
        """A VM's IPv6 addresses, link-local first; None if it has none.
        taken: addresses already given (-> to whom); this VM's are added."""
        place = f"vms.{name}"
        if "ipv6" not in body and "ipv6_link_local" not in body:
            return None
        raw = body.get("ipv6") or []
        if not isinstance(raw, list):
            self.fail(f"{place}.ipv6", "must be a list of IPv6 addresses")
        if "ipv6_link_local" in body:
            link_local = self.ipv6_address(body["ipv6_link_local"], f"{place}.ipv6_link_local",
                                           seg.name, None, link_local_ok=True)
            if not link_local.is_link_local:
                self.fail(f"{place}.ipv6_link_local", f"{link_local} is not link-local "
                                                      "(fe80::/10)")
        else:
            link_local = eui64_link_local(mac)
        out = [link_local]
        for i, value in enumerate(raw):
            address = self.ipv6_address(value, f"{place}.ipv6[{i}]", seg.name, seg.subnet6)
            if address in out:
                self.fail(f"{place}.ipv6[{i}]", f"{address} is given twice")
            out.append(address)
        for i, address in enumerate(out):
            where = f"{place}.ipv6[{i - 1}]" if i else f"{place}.ipv6_link_local"
            # Link-local addresses are per link: a clash matters inside one segment.
            key = (seg.name, address) if address.is_link_local else address
            if key in taken:
                self.fail(where, f"{address} is already used by {taken[key]}")
            taken[key] = f"VM '{name}'"
        return tuple(out)

    def boolean(self, body: dict, key: str, place: str) -> bool:
        value = body.get(key, False)
        if not isinstance(value, bool):
            self.fail(f"{place}.{key}", f"must be true or false, got {value!r}")
        return value

    def gateways_apart(self, segments, vm_macs: dict, vm_ips: dict) -> None:
        """A gateway is not a VM: its MAC and address are no VM's."""
        for seg in segments:
            for i, gw in enumerate(seg.gateways):
                where = f"segments.{seg.name}.gateways[{i}]"
                if gw.mac in vm_macs:
                    self.fail(f"{where}.mac", f"{gw.mac} is already used by "
                                              f"{vm_macs[gw.mac]}")
                if gw.ip is not None and gw.ip in vm_ips:
                    self.fail(f"{where}.ip", f"{gw.ip} is already used by {vm_ips[gw.ip]}")
                if gw.ipv6 is not None:
                    key = (seg.name, gw.ipv6) if gw.ipv6.is_link_local else gw.ipv6
                    if key in vm_ips:
                        self.fail(f"{where}.ipv6", f"{gw.ipv6} is already used by "
                                                   f"{vm_ips[key]}")

    def vm_binding(self, body: Mapping, place: str, hvs: Mapping, taken: dict):
        """(hypervisor, port, interface, iface_id): placed by the file, or
        bound to an interface the management plane names."""
        given = [k for k in ("interface", "iface_id") if k in body]
        placed = [k for k in ("hypervisor", "port") if k in body]
        if len(given) + bool(placed) != 1 or (placed and len(placed) != 2):
            self.fail(place, "say where the VM is in one way: hypervisor and port, or "
                             "interface (the OVS port name), or iface_id (the "
                             "Interface's external_ids:iface-id)")
        if placed:
            self.reference(body["hypervisor"], hvs, "hypervisor", f"{place}.hypervisor")
            port = self.integer(body["port"], f"{place}.port", 1, MAX_PORT)
            return body["hypervisor"], port, None, None
        key = given[0]
        value = body[key]
        limit = IFNAMSIZ if key == "interface" else 255
        if not isinstance(value, str) or not value or len(value) > limit \
                or not BINDING_RE.match(value):
            self.fail(f"{place}.{key}", f"invalid {key} {value!r}: 1 to {limit} letters, "
                                        "digits or . _ : @ -")
        binding = (value, None) if key == "interface" else (None, value)
        if binding in taken:
            self.fail(f"{place}.{key}", f"{key} {value!r} is already bound to VM "
                                        f"'{taken[binding]}'")
        return None, None, *binding
