"""The lab's decaying image: workers drift by hand during the long plan (ground truth of kind drift, an
expected host finding), and the lab report shows the hardening decay from the lab's store."""

from __future__ import annotations

import stat
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from herdwatch.evaluation.runner import HostSeen
from herdwatch.lab.drift import DRIFTS, apply_drift, set_sshd_option
from herdwatch.lab.images import load_image
from herdwatch.lab.schedule import Driver, Step, long_plan

T0 = datetime(2026, 12, 2, 5, 0, tzinfo=UTC)


def test_the_long_plan_has_a_decaying_worker_image_no_attack_or_replacement_touches() -> None:
    for minutes in (12, 65):
        plan = long_plan(minutes)
        drifts = [s for s in plan.steps if s.action == "drift"]
        assert {s.args["drift"] for s in drifts} == set(DRIFTS)
        assert all(s.args["slot"] in ("worker-0", "worker-2", "worker-4") for s in drifts)
        assert len({s.args["slot"] for s in drifts}) == len(drifts)  # a host drifts once
        assert all(plan.warmup_s < s.at <= plan.duration_s - 120 for s in drifts)
        attacked = {s.args["slot"] for s in plan.steps if s.action in ("attack", "replace", "scale_in")}
        assert not attacked & {s.args["slot"] for s in drifts}
        assert len({s.at for s in drifts}) == len(drifts)  # spread over the run: hosts drift as they age


def test_drifts_change_the_hosts_own_files_and_are_recorded_as_expected_drift(tmp_path: Path) -> None:
    from herdwatch.lab.fleet import Lab
    from herdwatch.lab.state import HostRecord, LabState

    state = LabState(lab_id="hwl0000", lab_dir=str(tmp_path), subnet="10.213.49", bridge="b", bridge_mac="m",
                     topic_prefix="p", kafka_root="k", kafka_port=1, controller_port=2, lab_port=3, started="")
    lab = Lab(state)
    host = HostRecord(slot="worker-0", host_id="h0", image="worker", image_id="worker-v1", family="worker", ns="n",
                      ip="10.213.49.10", veth="v")
    state.hosts.append(host)
    fs = lab.host_dir(host) / "fs"
    lab._write_image_files(fs, load_image("worker"))
    sshd = fs / "etc_ssh" / "sshd_config"
    assert stat.S_IMODE(sshd.stat().st_mode) == 0o600  # the image ships it readable by root only
    said: list[str] = []
    Driver(lab, said.append).do(Step(300, "drift", {"slot": "worker-0", "drift": "sshd-x11", "until": 900}))
    assert "X11Forwarding yes" in sshd.read_text() and "X11Forwarding no" not in sshd.read_text()
    assert stat.S_IMODE(sshd.stat().st_mode) == 0o600
    row = state.truth[-1]
    assert (row["kind"], row["host_id"], row["details"]["changes"]) == ("drift", "h0", {"sshd.x11forwarding": "yes"})
    assert row["details"]["evidence"] and row["end"] > row["start"]
    apply_drift("sshd-config-mode", fs, "n")
    assert stat.S_IMODE(sshd.stat().st_mode) == 0o644


def test_set_sshd_option_changes_the_first_value_sshd_reads() -> None:
    text = "# comment\nx11forwarding no\nX11Forwarding no\nPort 22\n"
    assert set_sshd_option(text, "X11Forwarding", "yes").splitlines()[1] == "X11Forwarding yes"
    assert set_sshd_option("Port 22\n", "X11Forwarding", "yes").splitlines()[0] == "X11Forwarding yes"


class StoredRows:
    """What the lab's store answers to the hardening_inputs query (a stand-in for the query client)."""

    def __init__(self, rows: list[dict[str, Any]]) -> None:
        self.rows = rows

    def query(self, sql: str, params: dict[str, Any]) -> Any:
        rows = self.rows

        class Result:
            def dicts(self) -> list[dict[str, Any]]:
                return rows

        return Result()


def snapshot(host: str, at: datetime, seq: int, values: dict[str, str]) -> list[dict[str, Any]]:
    base = {"host_id": host, "image_id": "worker-v1", "image_family": "worker", "time": at, "seq": seq}
    return ([{**base, "family": "config", "key": k, "snapshot": 1, "value": v} for k, v in values.items()]
            + [{**base, "family": "package", "key": "openssh-server", "snapshot": 1, "value": "1:9.6p1-3"}])


def test_the_lab_report_shows_the_decay_from_the_store() -> None:
    from herdwatch.lab.report import stored_decay

    image = {"hardening.inputs": "1", "os.id": "ubuntu", "os.id_like": "debian", "os.version_id": "24.04",
             "file.sha256:/etc/ssh/sshd_config": "aa", "file.mode:/etc/ssh/sshd_config": "0600",
             "file.owner:/etc/ssh/sshd_config": "0:0", "sshd.x11forwarding": "no",
             "sysctl.net.ipv4.ip_forward": "0"}
    rows: list[dict[str, Any]] = []
    hosts = {}
    for i in range(5):
        host = f"worker-{i}"
        hosts[host] = HostSeen(host, "worker-v1", "worker", T0, T0 + timedelta(minutes=40))
        rows += snapshot(host, T0 + timedelta(seconds=5), 1, image)
    rows.append({**rows[0], "host_id": "worker-0", "snapshot": 0, "key": "sshd.x11forwarding", "value": "yes",
                 "time": T0 + timedelta(minutes=5), "seq": 9})
    rows.append({**rows[0], "host_id": "worker-2", "snapshot": 0, "key": "sysctl.net.ipv4.ip_forward", "value": "1",
                 "time": T0 + timedelta(minutes=20), "seq": 9})
    decay = stored_decay(StoredRows(rows), hosts, {}, T0, T0 + timedelta(minutes=40))
    assert decay["ages"] == ["10m", "30m"]
    (img,) = decay["images"]
    assert img["image_id"] == "worker-v1" and img["hosts"] == 5
    assert img["compliance"]["10m"]["matching"] == 4 and img["compliance"]["30m"]["matching"] == 3
    assert {d["host_id"]: d["checks"] for d in img["drifted"]} == {"worker-0": ["ssh-x11-forwarding"],
                                                                   "worker-2": ["ip-forward"]}


def test_findings_about_what_a_drift_moved_are_credited_to_it() -> None:
    """The 12-minute run: turning forwarding on also turned accept_redirects off (the kernel does), and the
    X11 edit changed sshd_config's hash; both findings fell on the drifted hosts, named neither key of the
    truth rows and counted as false alarms."""
    from herdwatch.evaluation.scoring import evaluate

    def row(name: str, host: str) -> dict[str, Any]:
        d = DRIFTS[name]
        return {"scenario": f"drift-{name}", "kind": "drift", "host_id": host, "image_family": "worker",
                "start": T0.isoformat(), "end": (T0 + timedelta(minutes=30)).isoformat(),
                "details": {"changes": d.changes, "evidence": list(d.evidence)}}

    def finding(host: str, subject: str) -> dict[str, Any]:
        return {"kind": "config_drift", "host_id": host, "time": (T0 + timedelta(minutes=2)).isoformat(),
                "subject": subject, "explanation": f"configuration {subject[4:]} on host {host} differs",
                "details": {}}

    ev = evaluate([finding("w4", "cfg:sysctl.net.ipv4.conf.all.accept_redirects=0"),
                   finding("w0", "cfg:file.sha256:/etc/ssh/sshd_config=89e7b01b"),
                   finding("w0", "cfg:file.sha256:/etc/hosts=aa11")],
                  [row("ip-forward", "w4"), row("sshd-x11", "w0")], host_hours=1.0)
    assert (ev["true_positives"], ev["false_positives"], ev["detected"]) == (2, 1, 2)
