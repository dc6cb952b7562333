"""The lab context manager leaves nothing behind, also when the body fails."""
import os
import subprocess

import pytest

from topologies.lab import Lab

from .conftest import EXAMPLE


def _bridges():
    return set(subprocess.run(["ovs-vsctl", "list-br"], capture_output=True, text=True,
                              check=True).stdout.split())


def test_teardown_after_an_error_leaves_no_bridge_namespace_or_process():
    before = _bridges()
    with pytest.raises(RuntimeError, match="boom"):
        with Lab(EXAMPLE) as lab:
            pid = lab.controller_pid
            host_pid = lab.host("web1").pid
            assert {"hv1", "hv2", "core"} <= _bridges()
            raise RuntimeError("boom")
    assert _bridges() == before
    for gone in (pid, host_pid):
        assert not os.path.exists(f"/proc/{gone}"), f"process {gone} survived"
    links = subprocess.run(["ip", "-o", "link"], capture_output=True, text=True).stdout
    assert "hv1-p" not in links and "core-p" not in links
