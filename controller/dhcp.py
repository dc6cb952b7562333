"""DHCP snooping: what a DHCP message says, and what it does to a lease.

Pure Python. The switches copy to the controller the messages of trusted
servers (and the client messages of `ip: dhcp` VMs); an ACK from a trusted
server gives a VM its address, pinned then exactly as a declared one; a
NAK, the client's RELEASE or DECLINE, or the lease's end takes it away.
"""
from __future__ import annotations

import ipaddress
import struct
from dataclasses import dataclass

MAGIC = b"\x63\x82\x53\x63"
DISCOVER, OFFER, REQUEST, DECLINE, ACK, NAK, RELEASE, INFORM = range(1, 9)
NAMES = {DISCOVER: "DISCOVER", OFFER: "OFFER", REQUEST: "REQUEST", DECLINE: "DECLINE",
         ACK: "ACK", NAK: "NAK", RELEASE: "RELEASE", INFORM: "INFORM"}
OPT_LEASE_TIME, OPT_MESSAGE_TYPE, OPT_SERVER_ID, OPT_END, OPT_PAD = 51, 53, 54, 255, 0
INFINITE = 0xFFFFFFFF
# A lease with no time given, or an infinite one, is held this long before
# it must be renewed (seen again): the controller never pins forever.
DEFAULT_LEASE_SECONDS = 86400


@dataclass(frozen=True)
class Message:
    kind: int                 # DISCOVER .. INFORM
    chaddr: str               # the client's MAC
    ciaddr: str               # the client's address (RELEASE, renewals)
    yiaddr: str               # the address given (ACK)
    lease_seconds: int | None
    server_id: str | None

    @property
    def name(self) -> str:
        return NAMES.get(self.kind, str(self.kind))


@dataclass(frozen=True)
class Lease:
    ip: str
    expires: float            # time.time() seconds
    server: str               # MAC the ACK came from

    def to_dict(self) -> dict:
        return {"ip": self.ip, "expires": self.expires, "server": self.server}


def parse(frame: bytes) -> Message | None:
    """The DHCP message in an untagged Ethernet/IPv4/UDP frame; None if it is
    not one (or is malformed: the controller never trusts its bytes)."""
    if len(frame) < 14 + 20 + 8 + 240 or frame[12:14] != b"\x08\x00":
        return None
    ihl = (frame[14] & 0x0F) * 4
    if ihl < 20 or frame[23] != 17:
        return None
    udp = 14 + ihl
    bootp = udp + 8
    if len(frame) < bootp + 240 or frame[bootp + 236:bootp + 240] != MAGIC:
        return None
    ports = struct.unpack_from("!HH", frame, udp)
    if ports not in ((67, 68), (68, 67), (67, 67)):
        return None
    htype, hlen = frame[bootp + 1], frame[bootp + 2]
    if htype != 1 or hlen != 6:
        return None
    options = _options(frame[bootp + 240:])
    if options is None or OPT_MESSAGE_TYPE not in options \
            or len(options[OPT_MESSAGE_TYPE]) != 1:
        return None
    lease = options.get(OPT_LEASE_TIME)
    server = options.get(OPT_SERVER_ID)
    return Message(
        kind=options[OPT_MESSAGE_TYPE][0],
        chaddr=":".join(f"{b:02x}" for b in frame[bootp + 28:bootp + 34]),
        ciaddr=str(ipaddress.IPv4Address(frame[bootp + 12:bootp + 16])),
        yiaddr=str(ipaddress.IPv4Address(frame[bootp + 16:bootp + 20])),
        lease_seconds=struct.unpack("!I", lease)[0] if lease and len(lease) == 4 else None,
        server_id=str(ipaddress.IPv4Address(server)) if server and len(server) == 4
        else None)


def _options(data: bytes) -> dict[int, bytes] | None:
    out, at = {}, 0
    while at < len(data):
        code = data[at]
        if code == OPT_END:
            return out
        if code == OPT_PAD:
            at += 1
            continue
        if at + 1 >= len(data) or at + 2 + data[at + 1] > len(data):
            return None                    # an option running past the frame
        out.setdefault(code, data[at + 2:at + 2 + data[at + 1]])
        at += 2 + data[at + 1]
    return out


def check_address(ip: str) -> None:
    """ValueError unless `ip` is an address a lease can give a host."""
    address = ipaddress.IPv4Address(ip)
    if address.is_unspecified or address.is_multicast or address.is_loopback or \
            address == ipaddress.IPv4Address("255.255.255.255"):
        raise ValueError(f"{ip} is not a host address")


def lease_from(message: Message, server_mac: str, now: float) -> Lease:
    """The lease an ACK gives."""
    seconds = message.lease_seconds
    if seconds is None or seconds == INFINITE:
        seconds = DEFAULT_LEASE_SECONDS
    return Lease(message.yiaddr, now + seconds, server_mac)


def ends_lease(message: Message, lease: Lease | None, from_server: bool) -> bool:
    """Does this message take the client's lease away? A server's NAK; the
    client's RELEASE or DECLINE of the address it holds."""
    if lease is None:
        return False
    if from_server:
        return message.kind == NAK
    return message.kind in (RELEASE, DECLINE) and \
        (message.ciaddr == lease.ip or message.kind == DECLINE)
