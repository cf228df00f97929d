"""OSV matching with each distribution's version ordering, on a small fixture written for these tests. The
data is read on the worker side (streams/osv_data.py); the detectors match an index in memory."""

from __future__ import annotations

import json
import os
import time
import zipfile
from pathlib import Path

import pytest

from detectors.osv import OsvIndex, Platform
from streams.osv_data import OsvSource, load_index

OSV = Path(__file__).parents[1] / "fixtures" / "osv"


def ids(db: OsvIndex, platform: Platform, name: str, version: str) -> list[str]:
    return [m.advisory for m in db.match(platform, name, version)]


def test_ubuntu_binaries_and_release_and_fixed_version() -> None:
    db = load_index(OSV)
    noble, jammy = Platform("ubuntu", "24.04"), Platform("ubuntu", "22.04")
    [m] = db.match(noble, "openssh-server", "1:9.6p1-3ubuntu13")
    assert (m.advisory, m.aliases, m.fixed, m.installed) == (
        "TEST-U-0001", ("CVE-2024-6387",), "1:9.6p1-3ubuntu13.3", "1:9.6p1-3ubuntu13")
    assert ids(db, noble, "openssh-server", "1:9.6p1-3ubuntu13.3") == []  # the fixed version itself
    assert ids(db, noble, "openssh-server", "1:9.6p1-3ubuntu13.10") == []  # 13.10 > 13.3
    assert ids(db, noble, "openssh-server:amd64", "1:9.6p1-3ubuntu13.2") == ["TEST-U-0001"]
    assert ids(db, jammy, "openssh-server", "1:8.9p1-3ubuntu0.6") == ["TEST-U-0001"]
    assert ids(db, jammy, "openssh-server", "1:8.9p1-3") == []  # before "introduced"
    assert ids(db, jammy, "openssh-client", "1:8.9p1-3ubuntu0.6") == []  # not a binary of the 22.04 entry
    assert ids(db, Platform("ubuntu", "20.04"), "openssh-server", "1:8.2p1-4") == []  # no entry for the release
    assert ids(db, Platform("debian", "12"), "openssh-server", "1:9.6p1-3ubuntu13") == []  # other distribution


def test_debian_epochs_tildes_revisions_and_versions_lists() -> None:
    db = load_index(OSV)
    bookworm, bullseye = Platform("debian", "12"), Platform("debian", "11")
    assert ids(db, bookworm, "libdemo1", "2.0-1") == ["TEST-D-0001"]  # 2.0 < 1:1.0 (epoch)
    assert ids(db, bookworm, "libdemo1", "1:1.0-1") == []
    assert ids(db, bookworm, "libdemo1", "1:1.0~beta-1") == ["TEST-D-0001"]
    assert ids(db, bullseye, "libdemo1", "2.0~beta1-3") == ["TEST-D-0001"]  # ~beta1 < ~rc1
    assert ids(db, bullseye, "libdemo1", "2.0-1") == []  # 2.0~rc1-1 < 2.0-1
    assert ids(db, bookworm, "libtilde", "1.0~rc1-1") == ["TEST-D-0002"]  # introduced is inclusive
    assert ids(db, bookworm, "libtilde", "1.0-1") == ["TEST-D-0002"]  # last_affected is inclusive
    assert ids(db, bookworm, "libtilde", "1.0-1+deb12u1") == []
    assert ids(db, bookworm, "libtilde", "1.0~beta-1") == []
    assert ids(db, bookworm, "libtilde", "0.9-5") == ["TEST-D-0002"]  # listed in versions
    assert db.match(bookworm, "libtilde", "1.0-1")[0].fixed is None


def test_rpm_ordering_with_epochs_and_carets() -> None:
    db = load_index(OSV)
    rhel, rocky = Platform("rhel", "9.4"), Platform("rocky", "9.3")
    assert ids(db, rhel, "openssh-server", "8.7p1-38.el9") == ["TEST-R-0001"]
    assert ids(db, rhel, "openssh-server", "0:8.7p1-38.el9_4.1") == []
    assert ids(db, rhel, "openssh-server", "8.7p1-38.el9_4.10") == []
    assert ids(db, rhel, "openssh-server", "1:8.7p1-30.el9") == []  # epoch 1 beats the fixed 0:
    assert ids(db, rocky, "openssh-server", "8.7p1-34.el9") == ["TEST-R-0001"]
    assert ids(db, Platform("rhel", "8.10"), "openssh-server", "8.0p1-19.el8") == []
    assert ids(db, rhel, "snapkit", "1.0^20240201git1-1.el9") == ["TEST-R-0002"]
    assert ids(db, rhel, "snapkit", "1.0-1.el9") == []  # 1.0 < 1.0^snapshot: before introduced
    assert ids(db, rhel, "snapkit", "1.0.1-1.el9") == []  # 1.0.1 > any 1.0^snapshot


def test_withdrawn_records_and_broken_input_are_skipped(tmp_path: Path) -> None:
    (tmp_path / "bad.json").write_text("{not json")
    (tmp_path / "odd.json").write_text(json.dumps({"id": "X", "affected": [{"package": {}}, 3]}))
    db = load_index(tmp_path)
    assert db.records == 1 and db.by_name == {}
    full = load_index(OSV)
    assert "TEST-U-0002" not in {e.advisory for es in full.by_name.values() for e in es}
    assert ids(full, Platform("ubuntu", "24.04"), "openssh-server", "9:0") == []


def test_zip_data_and_refresh_in_place(tmp_path: Path) -> None:
    z = tmp_path / "osv.zip"
    with zipfile.ZipFile(z, "w") as out:
        out.write(OSV / "rhel" / "TEST-R-0001.json", "TEST-R-0001.json")
    source = OsvSource(z)
    assert ids(source(), Platform("rhel", "9"), "openssh-server", "8.7p1-1.el9") == ["TEST-R-0001"]
    assert not source.refresh()
    folder = tmp_path / "osv"
    folder.mkdir()
    clock = [0.0]
    source = OsvSource(folder, check_every_s=300, wall=lambda: clock[0])
    assert source().match(Platform("rhel", "9"), "openssh-server", "8.7p1-1.el9") == []
    f = folder / "r.json"
    f.write_text((OSV / "rhel" / "TEST-R-0001.json").read_text())
    os.utime(f, (time.time() + 5, time.time() + 5))
    clock[0] = 299.0
    assert ids(source(), Platform("rhel", "9"), "openssh-server", "8.7p1-1.el9") == []  # not looked at yet
    clock[0] = 300.0
    assert ids(source(), Platform("rhel", "9"), "openssh-server", "8.7p1-1.el9") == ["TEST-R-0001"]
    assert source.loads == 2


def test_the_detectors_read_no_osv_files() -> None:
    """Detectors are pure (docs/ARCHITECTURE.md): the OSV module matches in memory, the worker reads."""
    import ast

    import detectors.osv

    tree = ast.parse(Path(detectors.osv.__file__).read_text())
    imported = {a.name.split(".")[0] for n in ast.walk(tree) if isinstance(n, ast.Import) for a in n.names}
    imported |= {n.module.split(".")[0] for n in ast.walk(tree) if isinstance(n, ast.ImportFrom) and n.module}
    assert not imported & {"os", "pathlib", "zipfile", "json", "io", "shutil"}
    assert not [n for n in ast.walk(tree) if isinstance(n, ast.Name) and n.id == "open"]


def test_the_worker_reads_the_data_once_and_hands_it_to_every_engine(monkeypatch: pytest.MonkeyPatch) -> None:
    from streams.cohorts import CohortStage

    monkeypatch.delenv("HERDWATCH_WORKER_OSV_PATH", raising=False)
    stage = CohortStage({}, {}, {}, partition_of=lambda f: 0, host_timeout_s=300.0, touch_interval_s=30.0,
                        engine_config={"osv_path": str(OSV)})
    web, db = stage.engine("web").hardening.osv_index(), stage.engine("db").hardening.osv_index()
    assert web is db and web.records > 0
    assert CohortStage({}, {}, {}, partition_of=lambda f: 0, host_timeout_s=300.0,
                       touch_interval_s=30.0).engine("web").hardening.osv_index() is None
    monkeypatch.setenv("HERDWATCH_WORKER_OSV_PATH", str(OSV))
    assert CohortStage({}, {}, {}, partition_of=lambda f: 0, host_timeout_s=300.0,
                       touch_interval_s=30.0).engine("web").hardening.osv_index() is not None


def test_unreadable_data_gives_an_empty_index_not_a_dead_worker(tmp_path: Path) -> None:
    bad = tmp_path / "osv.zip"
    bad.write_bytes(b"not a zip")
    assert load_index(bad).records == 0 and load_index(tmp_path / "missing").records == 0
