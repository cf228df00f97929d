"""A link's own mode is not reported: Linux never uses it and lstat always gives 0777. Found in the lab: every
host's /etc/systemd/system/dbus-org.freedesktop.timesync1.service (an enabled unit, a link) was reported as
a world-writable sensitive file on every image (the hardening check world-writable-system-file reads the
same key)."""

from __future__ import annotations

from pathlib import Path

from test_collector_hardening import inventory

from collectors.probes.config import ConfigProbe
from detectors.features import config_feature
from detectors.policy import PolicyCheck
from streams.checks_data import policy_rules

RULES = str(Path(__file__).parents[1] / "fixtures" / "policy" / "rules.yaml")  # world-writable-sensitive-file


def test_a_link_has_no_mode_a_world_writable_file_still_has(fake_root: Path, tmp_path: Path) -> None:
    unit = fake_root / "lib/systemd/system/systemd-timesyncd.service"
    unit.parent.mkdir(parents=True)
    unit.write_text("[Service]\nExecStart=/lib/systemd/systemd-timesyncd\n")
    link = fake_root / "etc/systemd/system/dbus-org.freedesktop.timesync1.service"
    link.parent.mkdir(parents=True)
    link.symlink_to(unit)
    shadow = fake_root / "etc/shadow"
    shadow.write_text("root:*:19000::::::\n")
    shadow.chmod(0o666)
    items = inventory(ConfigProbe(root=fake_root, proc=tmp_path / "no-proc"))
    assert items["file.link:/etc/systemd/system/dbus-org.freedesktop.timesync1.service"] == str(unit)
    assert "file.mode:/etc/systemd/system/dbus-org.freedesktop.timesync1.service" not in items
    assert "file.owner:/etc/systemd/system/dbus-org.freedesktop.timesync1.service" in items
    assert items["file.mode:/etc/shadow"] == "0666"
    policy = PolicyCheck(policy_rules(RULES))
    flagged = {k for k, v in items.items() if policy.violations(config_feature(k, v))}
    assert flagged == {"file.mode:/etc/shadow"}, flagged
