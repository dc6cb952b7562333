"""The launcher refuses a bad network file before anything listens."""
import subprocess
import sys

from .test_model import EXAMPLE


def test_bad_network_file_exits_2_naming_file_place_and_problem(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text(EXAMPLE.read_text().replace("segment: dmz,", "segment: dmzz,", 1))
    run = subprocess.run([sys.executable, "-m", "controller", "--network", str(bad),
                          "--ofp-port", "1", "--rest-port", "1"],
                         capture_output=True, text=True, timeout=60)
    assert run.returncode == 2
    assert f"{bad}: vms.web1.segment: unknown segment 'dmzz'" in run.stderr
