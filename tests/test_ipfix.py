"""controller/ipfix.py on messages Open vSwitch 3.1 (userspace datapath)
exported on this machine: a ping between two ports whose entries carried
sample(probability=65535, collector_set_id=9, obs_domain_id=3,
obs_point_id=1234 / 5678); and on damaged copies of them."""
import os

import pytest

from controller import ipfix

CAPTURE = os.path.join(os.path.dirname(__file__), "data", "ovs31-ipfix.hex")


def messages():
    with open(CAPTURE) as f:
        return [bytes.fromhex(line) for line in f if line.strip()]


def decode_all(msgs, templates=None):
    templates = templates or ipfix.Templates()
    out, unknown = [], 0
    for m in msgs:
        records, skipped = ipfix.decode(m, "127.0.0.1", templates)
        out += records
        unknown += skipped
    return out, unknown, templates


def test_the_pings_records_name_their_entry_and_frame():
    records, unknown, templates = decode_all(messages())
    assert unknown == 0 and len(templates.known) > 10
    echo = [r for r in records if r.get("icmp_type") == 8]
    reply = [r for r in records if r.get("icmp_type") == 0 and r.get("ip_proto") == 1]
    assert len(echo) == len(reply) == 3
    assert {(r["observation_point"], r["domain"], r["src_ip"], r["dst_ip"], r["packets"],
             r["octets"], r["eth_type"]) for r in echo} == \
        {(1234, 3, "10.99.0.1", "10.99.0.2", 1, 84, 0x0800)}
    assert {r["observation_point"] for r in reply} == {5678}
    assert all(r["src_mac"].count(":") == 5 for r in records)
    assert any(r.get("src_ip", "").startswith("fe80::") for r in records)   # IPv6 template


def test_data_before_its_template_is_counted_not_decoded():
    msgs = messages()
    data_only = [m for m in msgs if m[16:18] not in (b"\x00\x02", b"\x00\x03")]
    records, unknown, _ = decode_all(data_only)
    assert records == [] and unknown > 0


def test_templates_survive_a_restart_through_their_saved_form():
    msgs = messages()
    _, _, templates = decode_all(msgs)
    again = ipfix.Templates.from_dict(templates.to_dict())
    data_only = [m for m in msgs if m[16:18] not in (b"\x00\x02", b"\x00\x03")]
    records, unknown, _ = decode_all(data_only, again)
    assert unknown == 0 and len(records) > 6


@pytest.mark.parametrize("damage", [
    lambda m: m[:10],                                   # short header
    lambda m: b"\x00\x09" + m[2:],                      # NetFlow v9, not IPFIX
    lambda m: m[:2] + (len(m) + 50).to_bytes(2, "big") + m[4:],   # longer than it is
    lambda m: m[:18] + b"\x00\x01" + m[20:],            # a set of length 1
])
def test_malformed_messages_raise_ipfix_error(damage):
    with pytest.raises(ipfix.IPFIXError):
        ipfix.decode(damage(messages()[0]), "127.0.0.1", ipfix.Templates())


def test_every_truncation_raises_or_decodes_never_crashes():
    templates = ipfix.Templates()
    decode_all(messages(), templates)
    for m in messages()[-6:]:
        for cut in range(16, len(m)):
            short = m[:2] + cut.to_bytes(2, "big") + m[4:cut]
            try:
                ipfix.decode(short, "127.0.0.1", templates)
            except ipfix.IPFIXError:
                pass
