"""Helpers for collector tests: a fake filesystem root with the config files the probes read, agent
settings pointing at it, and a consumer that reads back every telemetry event."""

from __future__ import annotations

import os
import time
from pathlib import Path

import pytest

from collectors.settings import CollectorSettings

DPKG_STATUS = """Package: openssh-server
Status: install ok installed
Architecture: amd64
Version: 1:9.2p1-2

Package: removed-thing
Status: deinstall ok config-files
Version: 1.0

Package: bash
Status: install ok installed
Architecture: amd64
Version: 5.2.15-2
"""


@pytest.fixture
def fake_root(tmp_path: Path) -> Path:
    """A host filesystem in miniature: sshd, passwd, sudoers, crontab, dpkg status, one user's keys."""
    root = tmp_path / "root"
    files = {
        "etc/ssh/sshd_config": "PermitRootLogin no\nPasswordAuthentication no\n"
                               "Include /etc/ssh/sshd_config.d/*.conf\n",
        "etc/ssh/sshd_config.d/10-x.conf": "X11Forwarding yes\nPermitRootLogin yes\n",
        "etc/passwd": "root:x:0:0:root:/root:/bin/bash\nalice:x:1000:1000::/home/alice:/bin/bash\n",
        "etc/group": "root:x:0:\nsudo:x:27:alice\n",
        "etc/sudoers": "root ALL=(ALL) ALL\n",
        "etc/crontab": "17 * * * * root cd / && run-parts /etc/cron.hourly\n",
        "home/alice/.ssh/authorized_keys": "ssh-ed25519 AAAA alice@laptop\n",
        "var/lib/dpkg/status": DPKG_STATUS,
        "etc/os-release": 'ID=debian\nVERSION_ID="12"\n',
    }
    for rel, text in files.items():
        path = root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    return root


@pytest.fixture
def fake_proc(tmp_path: Path) -> Path:
    """A /proc stand-in holding only a modules table (this machine has no /proc/modules)."""
    proc = tmp_path / "proc"
    proc.mkdir()
    (proc / "modules").write_text("ext4 1 0 - Live 0x0\nnf_tables 1 0 - Live 0x0\n")
    return proc


@pytest.fixture
def agent_settings(tmp_path: Path, fake_root: Path) -> CollectorSettings:
    return CollectorSettings(state_dir=tmp_path / "state", root=fake_root, cloud_metadata=False,
                             journal=False,
                             auth_logs=[tmp_path / "auth.log"], image_file=tmp_path / "no-image.json",
                             host_id=f"host-{os.getpid()}-{time.monotonic_ns()}", image_id="ami-test",
                             image_family="test-family", metrics_port=0)
