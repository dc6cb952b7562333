"""The state file: saved atomically, restored exactly, refused when unusable."""
from __future__ import annotations

import os
import subprocess
import sys
from dataclasses import replace
from pathlib import Path

import pytest

from controller import model, store
from controller.policy import Policy, VMRule
from controller.store import StateFileError

from .test_model import EXAMPLE


@pytest.fixture(scope="module")
def net() -> model.Network:
    return model.load(str(EXAMPLE))


def busy_policy() -> Policy:
    p = (Policy().with_default("deny").with_segment("dmz", "mirror")
         .with_pair("internal", "dmz", "allow")
         .with_vm("web1", VMRule("mirror", "sent")).with_vm("web2", VMRule("quarantine")))
    return replace(p, mirror_denied=True)


def test_a_saved_policy_comes_back_exactly(tmp_path, net):
    path = str(tmp_path / "policy.json")
    store.save(path, busy_policy(), net.policy, net.source)
    policy, doc = store.load(path, net)
    assert policy == busy_policy()
    assert doc["network_file"] == net.source and doc["format"] == store.FORMAT
    assert os.listdir(tmp_path) == ["policy.json"], "no temporary file left behind"


def test_no_state_file_means_the_network_file_policy(tmp_path, net):
    assert store.load(str(tmp_path / "absent.json"), net) is None


def test_save_creates_the_directory_and_replaces_the_old_file(tmp_path, net):
    path = str(tmp_path / "state" / "policy.json")
    store.save(path, Policy(), net.policy)
    store.save(path, Policy().with_default("deny"), net.policy)
    assert store.load(path, net)[0] == Policy().with_default("deny")


def test_a_failed_save_leaves_the_old_file_whole(tmp_path, net, monkeypatch):
    path = str(tmp_path / "policy.json")
    store.save(path, Policy(), net.policy)
    before = Path(path).read_bytes()

    def disk_full(fd):
        raise OSError(28, "No space left on device")
    monkeypatch.setattr(store.os, "fsync", disk_full)
    with pytest.raises(OSError):
        store.save(path, busy_policy(), net.policy)
    assert Path(path).read_bytes() == before
    assert os.listdir(tmp_path) == ["policy.json"]


@pytest.mark.parametrize("text, problem", [
    ("{not json", "not valid JSON"),
    ("", "not valid JSON"),
    ("[1, 2]", "not a state file of format 1"),
    ('{"format": 99, "policy": {}}', "not a state file of format 1"),
    ('{"format": 1}', "not a state file of format 1"),
    ('{"format": 1, "policy": {"default": "maybe"}}', "policy.default: invalid mode 'maybe'"),
    ('{"format": 1, "policy": {"segments": {"dmzz": "allow"}}}',
     "policy.segments.dmzz: unknown segment 'dmzz'"),
    ('{"format": 1, "policy": {"vms": {"ghost": "quarantine"}}}',
     "policy.vms.ghost: unknown VM 'ghost'"),
    ('{"format": 1, "policy": {"pairs": [{"segments": ["dmz", "dmz"], "mode": "allow"}]}}',
     "must list two different segments"),
])
def test_an_unusable_state_file_is_refused_naming_the_file(tmp_path, net, text, problem):
    path = tmp_path / "policy.json"
    path.write_text(text)
    with pytest.raises(StateFileError) as e:
        store.load(str(path), net)
    assert str(e.value).startswith(f"state file {path}: ")
    assert problem in str(e.value)


def test_a_policy_the_network_cannot_carry_is_refused(tmp_path):
    # Without any IDS, a mirroring policy cannot be carried out.
    text = EXAMPLE.read_text().replace("    ids_port: 3\n", "").replace(
        "mirror:\n  vlan: 900 ", "# ")
    path = tmp_path / "no-ids.yaml"
    path.write_text(text)
    net = model.load(str(path))
    state = tmp_path / "policy.json"
    store.save(str(state), Policy().with_default("mirror"), net.policy)
    with pytest.raises(StateFileError, match="it mirrors traffic"):
        store.load(str(state), net)


def test_an_edited_network_file_policy_is_noticed(tmp_path, net):
    path = str(tmp_path / "policy.json")
    store.save(path, busy_policy(), net.policy)
    _, doc = store.load(path, net)
    assert not store.file_policy_changed(doc, net.policy)
    assert store.file_policy_changed(doc, net.policy.with_default("deny"))


def test_the_default_state_file_is_named_after_the_network_file():
    assert store.default_path("/repo", "examples/consolidated.yaml") == \
        "/repo/state/consolidated.policy.json"


def _launch(*args, env=None):
    return subprocess.run([sys.executable, "-m", "controller", "--network", str(EXAMPLE),
                           "--ofp-port", "1", "--rest-port", "1", *args],
                          capture_output=True, text=True, timeout=60,
                          env={**os.environ, **(env or {})})


def test_the_launcher_refuses_a_corrupt_state_file_naming_it(tmp_path):
    state = tmp_path / "policy.json"
    state.write_text('{"format": 1, "policy": {"vms": {"ghost": "quarantine"}}}')
    run = _launch("--state-file", str(state))
    assert run.returncode == 2
    assert f"error: state file {state}: policy.vms.ghost: unknown VM 'ghost'" in run.stderr


def test_the_launcher_refuses_an_unusable_token(tmp_path):
    short = tmp_path / "token"
    short.write_text("secret\n")
    run = _launch("--state-file", str(tmp_path / "s.json"), "--token-file", str(short))
    assert run.returncode == 2 and "at least 16 characters" in run.stderr
    run = _launch("--state-file", str(tmp_path / "s.json"),
                  "--token-file", str(tmp_path / "missing"))
    assert run.returncode == 2 and "cannot read" in run.stderr
    run = _launch("--state-file", str(tmp_path / "s.json"), "--insecure-rest",
                  env={"VGUARD_API_TOKEN": "x" * 20})
    assert run.returncode == 2 and "choose one" in run.stderr
