"""docker-compose.yml and the Dockerfile, checked offline (no Docker engine here)."""
from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parent.parent


def compose_config(directory: Path) -> subprocess.CompletedProcess:
    assert shutil.which("docker-compose"), "docker-compose is installed by scripts/setup.sh"
    return subprocess.run(["docker-compose", "-f", "docker-compose.yml", "config", "-q"],
                          cwd=directory, capture_output=True, text=True, timeout=60)


def test_the_compose_file_is_valid():
    run = compose_config(REPO)
    assert run.returncode == 0, run.stderr


def test_the_check_catches_a_broken_compose_file(tmp_path):
    text = (REPO / "docker-compose.yml").read_text()
    (tmp_path / "docker-compose.yml").write_text(text.replace("    ports:", "    portz:"))
    run = compose_config(tmp_path)
    assert run.returncode != 0 and "portz" in run.stderr


def test_the_image_serves_what_compose_publishes_and_mounts():
    resolved = subprocess.run(["docker-compose", "-f", "docker-compose.yml", "config"],
                              cwd=REPO, capture_output=True, text=True, timeout=60)
    service = yaml.safe_load(resolved.stdout)["services"]["vguard"]
    dockerfile = (REPO / "Dockerfile").read_text()
    cmd = " ".join(re.findall(r'"([^"]+)"', dockerfile.split("\nCMD", 1)[1]))
    assert re.search(r"^FROM python:3\.11-\S*(bookworm|bullseye)", dockerfile, re.M)
    # Installed as scripts/setup.sh does it.
    assert "pip install 'setuptools<67' wheel" in dockerfile
    assert "pip install --no-build-isolation -r requirements-controller.txt" in dockerfile
    # ...and only the controller's requirements: no test or benchmark tools.
    runtime = (REPO / "requirements-controller.txt").read_text()
    assert "pytest" not in runtime and "matplotlib" not in runtime
    mounts = {v.split(":")[1] for v in service["volumes"]}     # source:target:mode
    assert {"/etc/vguard/network.yaml", "/var/lib/vguard"} <= mounts
    assert "--network /etc/vguard/network.yaml" in cmd
    assert "--state-file /var/lib/vguard/policy.json" in cmd
    assert "--token-file /run/secrets/vguard_api_token" in cmd
    assert service["secrets"] == [{"source": "vguard_api_token"}]
    published = {str(p["target"]) if isinstance(p, dict) else p.split(":")[-1].split("/")[0]
                 for p in service["ports"]}
    assert published == {"6653", "8080"}
    assert "--ofp-port 6653" in cmd and "--rest-port 8080" in cmd
    assert "--rest-host 0.0.0.0" in cmd and "--ofp-host 0.0.0.0" in cmd
