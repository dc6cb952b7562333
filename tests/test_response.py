"""IDS alerts act: EVE parsing, response rules and the responder's decisions."""
import ipaddress
import json

import pytest

from controller.response import (Alert, Responder, Response, ResponseError, parse_eve,
                                 parse_response)

OWNERS = {"10.0.0.1": "web1", "10.0.0.2": "db1", "10.0.0.53": "dns1",
          "10.0.0.3": "app1", "10.0.0.4": "app1"}     # app1 has two addresses


def owner_of(ip):
    return OWNERS.get(str(ip))


def eve(src="10.0.0.1", dest="10.0.0.2", sid=2000001, severity=2,
        category="Misc activity", **extra) -> dict:
    record = {"timestamp": "2024-05-01T10:00:00.000000+0000", "event_type": "alert",
              "src_ip": src, "src_port": 40000, "dest_ip": dest, "dest_port": 22,
              "proto": "tcp",
              "alert": {"signature_id": sid, "signature": "ET TEST", "severity": severity,
                        "category": category}}
    record.update(extra)
    return record


def alert(**kw) -> Alert:
    alerts, ignored = parse_eve(json.dumps(eve(**kw)))
    assert ignored == 0
    return alerts[0]


def responder(*rules, **top) -> Responder:
    return Responder(parse_response({"rules": list(rules), **top}))


# --- parse_eve --------------------------------------------------------------

def test_one_record_becomes_an_alert_with_every_field():
    alerts, ignored = parse_eve(json.dumps(eve()))
    assert ignored == 0 and len(alerts) == 1
    a = alerts[0]
    assert a.src_ip == ipaddress.ip_address("10.0.0.1")
    assert a.dest_ip == ipaddress.ip_address("10.0.0.2")
    assert (a.src_port, a.dest_port, a.proto) == (40000, 22, "TCP")
    assert (a.signature_id, a.signature, a.severity, a.category) == (
        2000001, "ET TEST", 2, "Misc activity")
    assert a.timestamp == "2024-05-01T10:00:00.000000+0000"
    assert a.to_dict()["src_ip"] == "10.0.0.1"
    json.dumps(a.to_dict())


def test_a_pretty_printed_single_object_is_one_record():
    alerts, ignored = parse_eve(json.dumps(eve(), indent=2))
    assert (len(alerts), ignored) == (1, 0)


def test_a_batch_counts_every_unusable_record_and_skips_blank_lines():
    lines = [
        json.dumps(eve(src="10.0.0.1")),
        "",
        json.dumps({"event_type": "flow", "src_ip": "10.0.0.1", "dest_ip": "10.0.0.2"}),
        '{"event_type": "alert", "src_ip": ',                   # malformed JSON
        json.dumps(eve(src="10.0.0.999")),                      # bad address
        json.dumps(eve(dest=None)),                             # missing address
        json.dumps([1, 2]),                                     # not an object
        json.dumps({k: v for k, v in eve().items() if k != "alert"}),
        json.dumps(eve(sid="2000001")),                         # sid not an int
        json.dumps(eve(severity=0)),                            # severity out of range
        json.dumps(eve(severity=True)),
        "   ",
        json.dumps(eve(src="fd00::1", dest="fd00::2", severity=255)),
    ]
    alerts, ignored = parse_eve("\n".join(lines))
    assert ignored == 9
    assert [str(a.src_ip) for a in alerts] == ["10.0.0.1", "fd00::1"]


def test_optional_fields_default_when_absent_or_wrong():
    record = eve(src_port="x", proto=6)
    del record["dest_port"], record["timestamp"]
    del record["alert"]["signature"], record["alert"]["category"]
    (a,), ignored = parse_eve(json.dumps(record))
    assert ignored == 0
    assert (a.src_port, a.dest_port, a.proto, a.timestamp) == (None, None, "", "")
    assert (a.signature, a.category) == ("", "")


def test_empty_text_has_nothing():
    assert parse_eve("") == ([], 0)
    assert parse_eve("\n\n") == ([], 0)


# --- rules: matching ---------------------------------------------------------

def test_each_selector_matches_on_its_own():
    by_sev = parse_response({"rules": [{"severity": [1, 2], "target": "source",
                                        "action": "quarantine"}]}).rules[0]
    assert by_sev.matches(alert(severity=2)) and not by_sev.matches(alert(severity=3))
    by_sid = parse_response({"rules": [{"signature_id": [7, 9], "target": "source",
                                        "action": "mirror"}]}).rules[0]
    assert by_sid.matches(alert(sid=9)) and not by_sid.matches(alert(sid=8))
    by_cat = parse_response({"rules": [{"category": ["Bad"], "target": "source",
                                        "action": "mirror"}]}).rules[0]
    assert by_cat.matches(alert(category="Bad"))
    assert not by_cat.matches(alert(category="bad"))


def test_selectors_are_and_between_and_or_within():
    rule = parse_response({"rules": [{"severity": [1, 2], "signature_id": [5, 6],
                                      "target": "source", "action": "quarantine"}]}).rules[0]
    assert rule.matches(alert(severity=1, sid=6))
    assert rule.matches(alert(severity=2, sid=5))
    assert not rule.matches(alert(severity=3, sid=5)), "severity fails"
    assert not rule.matches(alert(severity=1, sid=7)), "signature fails"


def test_the_first_matching_rule_wins():
    r = responder({"signature_id": [5], "target": "destination", "action": "mirror"},
                  {"severity": [2], "target": "source", "action": "quarantine"})
    (d,) = r.decide(alert(sid=5, severity=2), owner_of, now=0.0)
    assert (d.rule, d.action, d.vm) == (0, "mirror", "db1")
    (d,) = r.decide(alert(sid=6, severity=2), owner_of, now=1.0)
    assert (d.rule, d.action, d.vm) == (1, "quarantine", "web1")


def test_no_matching_rule_decides_nothing():
    r = responder({"severity": [1], "target": "source", "action": "quarantine"})
    assert r.decide(alert(severity=3), owner_of, 0.0) == []
    assert r.active() == []


def test_no_response_acts_on_nothing():
    r = Responder(parse_response(None))
    assert r.response == Response(rules=(), allowlist=frozenset(), max_per_minute=10)
    assert r.decide(alert(severity=1), owner_of, 0.0) == []


# --- deciding ----------------------------------------------------------------

def test_targets_source_destination_and_both():
    for target, vms in (("source", ["web1"]), ("destination", ["db1"]),
                        ("both", ["web1", "db1"])):
        r = responder({"severity": [2], "target": target, "action": "quarantine"})
        decisions = r.decide(alert(), owner_of, 0.0)
        assert [(d.kind, d.vm) for d in decisions] == [("acted", vm) for vm in vms]
        assert sorted(a.vm for a in r.active()) == sorted(vms)


def test_both_with_one_address_or_one_vm_decides_once():
    r = responder({"severity": [2], "target": "both", "action": "mirror"})
    assert [d.vm for d in r.decide(alert(src="10.0.0.1", dest="10.0.0.1"),
                                   owner_of, 0.0)] == ["web1"]
    r = responder({"severity": [2], "target": "both", "action": "mirror"})
    decisions = r.decide(alert(src="10.0.0.3", dest="10.0.0.4"), owner_of, 0.0)
    assert [(d.kind, d.vm) for d in decisions] == [("acted", "app1")]


def test_an_address_no_vm_owns_is_recorded_unowned():
    r = responder({"severity": [2], "target": "both", "action": "quarantine", "ttl": 30})
    decisions = r.decide(alert(src="192.0.2.9"), owner_of, 0.0)
    assert [(d.kind, d.vm) for d in decisions] == [("unowned", None), ("acted", "db1")]
    assert decisions[0].expires is None and decisions[1].expires == 30.0
    assert [a.vm for a in r.active()] == ["db1"]


def test_an_allowlisted_vm_never_acts():
    r = responder({"severity": [2], "target": "source", "action": "quarantine"},
                  allowlist=["dns1"])
    (d,) = r.decide(alert(src="10.0.0.53"), owner_of, 0.0)
    assert (d.kind, d.vm, d.rule) == ("allowlisted", "dns1", 0)
    assert r.active() == []


def test_an_action_records_its_rule_alert_and_times():
    r = responder({"severity": [1], "target": "source", "action": "mirror"},
                  {"severity": [2], "target": "source", "action": "mirror", "ttl": 600})
    a0 = alert()
    (d,) = r.decide(a0, owner_of, 100.0)
    assert (d.kind, d.rule, d.expires, d.alert) == ("acted", 1, 700.0, a0)
    (act,) = r.active()
    assert (act.vm, act.action, act.rule, act.alert, act.since, act.expires) == (
        "web1", "mirror", 1, a0, 100.0, 700.0)
    assert act.released_by is None
    assert d.to_dict()["alert"]["src_ip"] == "10.0.0.1" and d.to_dict()["kind"] == "acted"


def test_the_cap_counts_new_actions_over_a_sliding_minute():
    r = responder({"severity": [2], "target": "source", "action": "quarantine"})

    def numbered(ip):                   # 10.1.0.N belongs to vmN
        return f"vm{str(ip).rsplit('.', 1)[1]}"

    for i in range(10):
        (d,) = r.decide(alert(src=f"10.1.0.{i}"), numbered, now=float(i))
        assert d.kind == "acted"
    (d,) = r.decide(alert(src="10.1.0.10"), numbered, now=59.5)
    assert (d.kind, d.vm, d.expires) == ("capped", "vm10", None)
    assert "vm10" not in {a.vm for a in r.active()} and len(r.active()) == 10
    (d,) = r.decide(alert(src="10.1.0.10"), numbered, now=60.0)   # vm0's slot freed
    assert d.kind == "acted"
    (d,) = r.decide(alert(src="10.1.0.11"), numbered, now=60.5)   # vm1's still held
    assert d.kind == "capped"
    (d,) = r.decide(alert(src="10.1.0.11"), numbered, now=61.0)
    assert d.kind == "acted"


def test_a_cap_of_zero_never_acts():
    r = responder({"severity": [2], "target": "source", "action": "quarantine"},
                  max_per_minute=0)
    (d,) = r.decide(alert(), owner_of, 0.0)
    assert d.kind == "capped" and r.active() == []


def test_a_repeat_alert_extends_and_costs_nothing_against_the_cap():
    r = responder({"severity": [2], "target": "source", "action": "quarantine", "ttl": 100},
                  max_per_minute=1)
    assert r.decide(alert(), owner_of, 0.0)[0].kind == "acted"
    (d,) = r.decide(alert(sid=42), owner_of, 50.0)
    assert (d.kind, d.vm, d.expires) == ("extended", "web1", 150.0)
    (act,) = r.active()
    assert (act.since, act.expires, act.alert.signature_id) == (0.0, 150.0, 2000001)
    # the extension used no slot, the first action used the minute's only one
    (d,) = r.decide(alert(src="10.0.0.2"), owner_of, 55.0)
    assert (d.kind, d.vm) == ("capped", "db1")
    # an earlier expiry never shortens it
    r.set_response(parse_response({"rules": [{"severity": [2], "target": "source",
                                              "action": "quarantine", "ttl": 10}],
                                   "max_per_minute": 1}))
    (d,) = r.decide(alert(), owner_of, 56.0)
    assert (d.kind, d.expires) == ("extended", 150.0)


def test_extensions_are_not_counted_by_the_cap():
    r = responder({"severity": [2], "target": "source", "action": "quarantine"},
                  max_per_minute=2)
    r.decide(alert(), owner_of, 0.0)
    for t in (1.0, 2.0, 3.0):
        assert r.decide(alert(), owner_of, t)[0].kind == "extended"
    assert r.decide(alert(src="10.0.0.2"), owner_of, 4.0)[0].kind == "acted"


def test_without_ttl_an_action_lasts_until_released():
    r = responder({"severity": [2], "target": "source", "action": "mirror"})
    (d,) = r.decide(alert(), owner_of, 0.0)
    assert d.expires is None
    assert r.expire(1e9) == [] and len(r.active()) == 1
    r2 = responder({"severity": [2], "target": "source", "action": "mirror", "ttl": 5})
    r2.decide(alert(), owner_of, 0.0)
    r2.set_response(r.response)
    (d,) = r2.decide(alert(), owner_of, 1.0)
    assert (d.kind, d.expires) == ("extended", None), "no ttl extends to until released"


def test_a_vm_may_be_quarantined_and_mirrored_at_once():
    r = responder({"severity": [2], "target": "source", "action": "quarantine"},
                  {"severity": [3], "target": "source", "action": "mirror"})
    r.decide(alert(severity=2), owner_of, 0.0)
    (d,) = r.decide(alert(severity=3), owner_of, 1.0)
    assert d.kind == "acted"
    assert sorted(a.action for a in r.active()) == ["mirror", "quarantine"]


def test_expire_removes_and_returns_what_is_due():
    r = responder({"severity": [2], "target": "source", "action": "quarantine", "ttl": 10},
                  {"severity": [3], "target": "source", "action": "mirror", "ttl": 20})
    r.decide(alert(severity=2), owner_of, 0.0)
    r.decide(alert(severity=3), owner_of, 0.0)
    assert r.expire(9.9) == []
    (gone,) = r.expire(10.0)
    assert (gone.vm, gone.action, gone.released_by) == ("web1", "quarantine", "expiry")
    assert [a.action for a in r.active()] == ["mirror"]
    assert r.expire(10.0) == []


def test_release_removes_all_or_one_kind():
    r = responder({"severity": [2], "target": "both", "action": "quarantine"},
                  {"severity": [3], "target": "source", "action": "mirror"})
    r.decide(alert(severity=2), owner_of, 0.0)
    r.decide(alert(severity=3), owner_of, 0.0)
    (gone,) = r.release("web1", "mirror", by="alice")
    assert (gone.vm, gone.action, gone.released_by) == ("web1", "mirror", "alice")
    assert sorted((a.vm, a.action) for a in r.active()) == [
        ("db1", "quarantine"), ("web1", "quarantine")]
    assert r.release("web1", "mirror") == []
    gone = r.release("db1")
    assert [(a.vm, a.action, a.released_by) for a in gone] == [
        ("db1", "quarantine", "operator")]
    assert [a.vm for a in r.active()] == ["web1"]
    with pytest.raises(ResponseError, match=r"release\.action"):
        r.release("web1", "block")


def test_released_vm_acts_anew_and_counts_again():
    r = responder({"severity": [2], "target": "source", "action": "quarantine"},
                  max_per_minute=1)
    r.decide(alert(), owner_of, 0.0)
    r.release("web1")
    (d,) = r.decide(alert(), owner_of, 1.0)
    assert d.kind == "capped", "a new action again, and the minute's one is used"


def test_set_response_keeps_the_actions_in_force():
    r = responder({"severity": [2], "target": "source", "action": "quarantine"})
    r.decide(alert(), owner_of, 0.0)
    new = parse_response({"rules": [{"severity": [4], "target": "source",
                                     "action": "mirror"}]})
    r.set_response(new)
    assert r.response is new
    assert [(a.vm, a.action) for a in r.active()] == [("web1", "quarantine")]
    assert r.decide(alert(severity=2), owner_of, 1.0) == []


# --- rules: errors -----------------------------------------------------------

OK = {"severity": [1], "target": "source", "action": "quarantine"}


@pytest.mark.parametrize("raw, message", [
    ([1], "response: must be a mapping"),
    ({"rulez": []}, "response: unknown key(s) rulez"),
    ({"rules": {}}, "response.rules: must be a list"),
    ({"rules": [OK, "x"]}, "response.rules[1]: must be a mapping"),
    ({"rules": [{**OK, "when": 1}]}, "response.rules[0]: unknown key(s) when"),
    ({"rules": [{"target": "source", "action": "mirror"}]},
     "response.rules[0]: needs at least one of severity"),
    ({"rules": [OK, {**OK, "severity": [0]}]},
     "response.rules[1].severity[0]: must be an integer 1..255, not 0"),
    ({"rules": [{**OK, "severity": [1, 256]}]},
     "response.rules[0].severity[1]: must be an integer 1..255"),
    ({"rules": [{**OK, "severity": 1}]},
     "response.rules[0].severity: must be a non-empty list"),
    ({"rules": [{**OK, "severity": []}]},
     "response.rules[0].severity: must be a non-empty list"),
    ({"rules": [{**OK, "severity": [True]}]},
     "response.rules[0].severity[0]: must be an integer"),
    ({"rules": [{**OK, "signature_id": [-1]}]},
     "response.rules[0].signature_id[0]: must be an integer >= 0, not -1"),
    ({"rules": [{**OK, "category": [""]}]},
     "response.rules[0].category[0]: must be a non-empty string"),
    ({"rules": [{**OK, "category": "Bad"}]},
     "response.rules[0].category: must be a non-empty list of strings"),
    ({"rules": [{**OK, "target": "up"}]},
     "response.rules[0].target: must be source, destination or both, not 'up'"),
    ({"rules": [{"severity": [1], "action": "mirror"}]},
     "response.rules[0].target: required"),
    ({"rules": [{**OK, "action": "drop"}]},
     "response.rules[0].action: must be quarantine or mirror, not 'drop'"),
    ({"rules": [{"severity": [1], "target": "both"}]},
     "response.rules[0].action: required"),
    ({"rules": [{**OK, "ttl": 0}]},
     "response.rules[0].ttl: must be a positive number of seconds, not 0"),
    ({"rules": [{**OK, "ttl": "1h"}]}, "response.rules[0].ttl: must be a positive number"),
    ({"rules": [{**OK, "ttl": float("inf")}]},
     "response.rules[0].ttl: must be a positive number"),
    ({"allowlist": "dns1"}, "response.allowlist: must be a list of VM names"),
    ({"allowlist": ["dns1", 3]}, "response.allowlist[1]: must be a VM name, not 3"),
    ({"max_per_minute": -1}, "response.max_per_minute: must be an integer >= 0, not -1"),
    ({"max_per_minute": 2.5}, "response.max_per_minute: must be an integer >= 0"),
])
def test_bad_response_is_refused_naming_the_place(raw, message):
    with pytest.raises(ResponseError) as e:
        parse_response(raw)
    assert str(e.value).startswith(message), str(e.value)
    assert isinstance(e.value, ValueError)


def test_a_good_response_parses_to_its_values():
    r = parse_response({
        "rules": [{"severity": [1, 2], "target": "source", "action": "quarantine",
                   "ttl": 600},
                  {"signature_id": [2100498], "target": "both", "action": "mirror"},
                  {"category": ["Attempted Administrator Privilege Gain"],
                   "target": "destination", "action": "quarantine"}],
        "allowlist": ["dns1"], "max_per_minute": 3})
    assert [(x.target, x.action, x.ttl) for x in r.rules] == [
        ("source", "quarantine", 600), ("both", "mirror", None),
        ("destination", "quarantine", None)]
    assert r.rules[1].signature_id == (2100498,) and r.rules[1].severity is None
    assert r.allowlist == frozenset({"dns1"}) and r.max_per_minute == 3
    assert parse_response({}).max_per_minute == 10


# --- round trips -------------------------------------------------------------

def test_response_to_dict_round_trips():
    r = parse_response({
        "rules": [{"severity": [1, 2], "category": ["A", "B"], "target": "source",
                   "action": "quarantine", "ttl": 60.5},
                  {"signature_id": [0, 7], "target": "both", "action": "mirror"}],
        "allowlist": ["dns1", "ntp1"], "max_per_minute": 0})
    d = r.to_dict()
    assert parse_response(d) == r
    assert parse_response(json.loads(json.dumps(d))) == r
    assert d["rules"][1] == {"signature_id": [0, 7], "target": "both", "action": "mirror"}
    assert parse_response(parse_response(None).to_dict()) == Response()


def test_responder_state_round_trips_through_json():
    rules = parse_response({"rules": [
        {"severity": [2], "target": "both", "action": "quarantine", "ttl": 30},
        {"severity": [3], "target": "source", "action": "mirror"}], "max_per_minute": 3})
    r = Responder(rules)
    r.decide(alert(severity=2), owner_of, 5.0)
    r.decide(alert(severity=3, src="fd00::9"), lambda ip: "v6vm", 6.0)
    saved = json.loads(json.dumps(r.to_dict()))
    back = Responder.from_dict(saved, rules)
    assert back.active() == r.active() and len(back.active()) == 3
    assert back.to_dict() == r.to_dict()
    # the cap's window came back too: 3 new actions were taken in this minute
    (d,) = back.decide(alert(severity=3, src="10.0.0.53"), owner_of, 7.0)
    assert d.kind == "capped"
    assert [a.vm for a in back.expire(35.0)] == ["db1", "web1"]
    assert [a.vm for a in back.active()] == ["v6vm"]


def test_bad_saved_state_is_refused_naming_the_place():
    rules = parse_response(None)
    with pytest.raises(ResponseError, match=r"responder state: must be a mapping"):
        Responder.from_dict([], rules)
    with pytest.raises(ResponseError, match=r"responder state\.window"):
        Responder.from_dict({"window": ["x"]}, rules)
    good = Responder(parse_response({"rules": [OK]}))
    good.decide(alert(severity=1), owner_of, 0.0)
    saved = good.to_dict()
    saved["active"][0]["action"] = "drop"
    with pytest.raises(ResponseError, match=r"responder state\.active\[0\]\.action"):
        Responder.from_dict(saved, rules)
    saved = good.to_dict()
    saved["active"][0]["alert"]["src_ip"] = "nope"
    with pytest.raises(ResponseError, match=r"responder state\.active\[0\]\.alert"):
        Responder.from_dict(saved, rules)
