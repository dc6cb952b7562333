"""IPFIX (RFC 7011) messages -> data records, as Open vSwitch exports them.

Pure: bytes in, dicts out. Only what the flow records need is named; other
information elements are skipped by their length, so a newer exporter's
extra fields cost nothing. PyPI's `netflow` parser was tried first: it
rejects OVS's templates (their variable-length interface names).

Over UDP, templates arrive before the data that uses them and again every
10 minutes (OVS's fixed interval); data whose template is not known yet is
counted and skipped. Templates are kept per (exporter address, observation
domain), bounded, and can be saved and loaded (Templates.to_dict) so a
restarted collector decodes at once.
"""
from __future__ import annotations

import ipaddress
import struct

VERSION = 10
TEMPLATE_SET, OPTIONS_TEMPLATE_SET = 2, 3
VARIABLE = 0xFFFF
OPTIONS = ()                  # an options template's data is skipped
MAX_TEMPLATES = 4096          # per collector: a forged flood of templates stays bounded

# IANA information elements -> (record key, how to read the bytes).
_MAC, _INT, _IP = "mac", "int", "ip"
ELEMENTS = {
    1: ("octets", _INT), 2: ("packets", _INT), 4: ("ip_proto", _INT),
    7: ("src_port", _INT), 8: ("src_ip", _IP), 10: ("in_port", _INT),
    11: ("dst_port", _INT), 12: ("dst_ip", _IP), 14: ("out_port", _INT),
    27: ("src_ip", _IP), 28: ("dst_ip", _IP), 56: ("src_mac", _MAC),
    58: ("vlan", _INT), 80: ("dst_mac", _MAC), 138: ("observation_point", _INT),
    158: ("start_delta_us", _INT), 159: ("end_delta_us", _INT),
    176: ("icmp_type", _INT), 177: ("icmp_code", _INT),
    178: ("icmp_type", _INT), 179: ("icmp_code", _INT),
    243: ("vlan", _INT), 256: ("eth_type", _INT),
}


class IPFIXError(ValueError):
    """A message that is not IPFIX, or is cut short."""


class Templates:
    """(exporter, domain, template id) -> [(element id, length, enterprise)]."""

    def __init__(self):
        self.known: dict[tuple[str, int, int], tuple] = {}

    def add(self, key: tuple[str, int, int], fields: tuple) -> None:
        if key not in self.known and len(self.known) >= MAX_TEMPLATES:
            self.known.pop(next(iter(self.known)))     # the oldest goes
        self.known[key] = fields

    def to_dict(self) -> list:
        return [[list(k), [list(f) for f in v]] for k, v in self.known.items()]

    @classmethod
    def from_dict(cls, doc) -> "Templates":
        t = cls()
        for key, fields in doc or []:
            t.add(tuple(key), tuple(tuple(f) for f in fields))
        return t


def decode(message: bytes, exporter: str, templates: Templates) -> tuple[list[dict], int]:
    """The data records of one message, each with `domain` and
    `export_time` (seconds), and how many records were skipped for want
    of their template. Raises IPFIXError for a malformed message; the
    templates it carried before the fault are kept."""
    if len(message) < 16:
        raise IPFIXError(f"{len(message)} bytes: shorter than an IPFIX header")
    version, length, export_time, _seq, domain = struct.unpack_from("!HHIII", message)
    if version != VERSION:
        raise IPFIXError(f"version {version}, not IPFIX ({VERSION})")
    if not 16 <= length <= len(message):
        raise IPFIXError(f"header says {length} bytes, message has {len(message)}")
    records, unknown, offset = [], 0, 16
    while offset < length:
        if offset + 4 > length:
            raise IPFIXError(f"set header cut short at byte {offset}")
        set_id, set_length = struct.unpack_from("!HH", message, offset)
        if set_length < 4 or offset + set_length > length:
            raise IPFIXError(f"set {set_id} at byte {offset}: bad length {set_length}")
        body = message[offset + 4:offset + set_length]
        offset += set_length
        if set_id in (TEMPLATE_SET, OPTIONS_TEMPLATE_SET):
            _templates(body, (exporter, domain), templates, set_id == OPTIONS_TEMPLATE_SET)
        elif set_id >= 256:
            fields = templates.known.get((exporter, domain, set_id))
            if fields is None:
                unknown += 1
                continue
            if fields == OPTIONS:
                continue      # the exporter's own statistics: not flows
            for record in _data(body, fields):
                record.update(domain=domain, export_time=export_time)
                records.append(record)
    return records, unknown


def _templates(body: bytes, scope: tuple[str, int], templates: Templates,
               options: bool) -> None:
    p = 0
    while p + (6 if options else 4) <= len(body):
        template_id, count = struct.unpack_from("!HH", body, p)
        p += 6 if options else 4          # an options template: and its scope count
        if template_id < 256:
            raise IPFIXError(f"template id {template_id} is reserved")
        fields = []
        for _ in range(count):
            if p + 4 > len(body):
                raise IPFIXError(f"template {template_id} cut short")
            element, size = struct.unpack_from("!HH", body, p)
            p += 4
            enterprise = 0
            if element & 0x8000:
                if p + 4 > len(body):
                    raise IPFIXError(f"template {template_id} cut short")
                enterprise, = struct.unpack_from("!I", body, p)
                p += 4
                element &= 0x7FFF
            fields.append((element, size, enterprise))
        templates.add(scope + (template_id,), OPTIONS if options else tuple(fields))


def _data(body: bytes, fields: tuple):
    p = 0
    fixed = sum(size for _, size, _ in fields if size != VARIABLE)
    while len(body) - p >= max(fixed, 1):
        record = {}
        for element, size, enterprise in fields:
            if size == VARIABLE:
                if p >= len(body):
                    raise IPFIXError("variable-length field cut short")
                size = body[p]
                p += 1
                if size == 255:
                    if p + 2 > len(body):
                        raise IPFIXError("variable-length field cut short")
                    size, = struct.unpack_from("!H", body, p)
                    p += 2
            if p + size > len(body):
                raise IPFIXError(f"element {element} cut short")
            value = body[p:p + size]
            p += size
            known = ELEMENTS.get(element) if not enterprise else None
            if known is not None:
                record[known[0]] = _value(known[1], value)
        yield record
        if fixed == 0:
            break             # a record of only empty fields: do not spin on padding


def _value(kind: str, raw: bytes):
    if kind == _MAC:
        return ":".join(f"{b:02x}" for b in raw)
    if kind == _IP:
        return str(ipaddress.ip_address(raw)) if len(raw) in (4, 16) else None
    return int.from_bytes(raw, "big")
