"""Distribution version ordering: dpkg (python-debian) and rpm (our rpmvercmp)."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from detectors.versions import compare, dpkg_compare, rpm_compare, rpmvercmp, split_evr

# (a, b, expected sign of rpmvercmp(a, b)): rpm's documented behaviour, case by case.
RPM_CASES = [
    ("1.0", "1.0", 0), ("1.0", "2.0", -1), ("2.0", "1.0", 1),
    ("2.0.1", "2.0.1", 0), ("2.0", "2.0.1", -1), ("2.0.1a", "2.0.1", 1), ("2.0.1", "2.0.1a", -1),
    ("5.5p1", "5.5p2", -1), ("5.5p10", "5.5p2", 1), ("5.5p1", "5.5p10", -1),
    ("10xyz", "10.1xyz", -1), ("xyz10", "xyz10.1", -1), ("xyz.4", "8", -1), ("8", "xyz.4", 1),
    ("1.01", "1.1", 0), ("1.010", "1.1", 1), ("20101121", "20101122", -1),
    ("2_0", "2_0", 0), ("2.0", "2_0", 0), ("a", "a", 0), ("a+", "a+", 0), ("a+", "a_", 0), ("+a", "_a", 0),
    ("fc4", "fc.4", 0), ("FC5", "fc4", -1), ("2a", "2.0", -1), ("1.0a", "1.0.1", -1),
    ("6.0.rc1", "6.0", 1), ("10b2", "10a1", 1), ("1b", "1a", 1),
    # tilde: before everything, even the end of the string
    ("1.0~rc1", "1.0", -1), ("1.0", "1.0~rc1", 1), ("1.0~rc1", "1.0~rc2", -1), ("1.0~rc1", "1.0~rc1", 0),
    ("1.0~rc1~git123", "1.0~rc1", -1), ("1.0~~", "1.0~", -1), ("~1", "0", -1),
    # caret: after the end of the string, before anything else
    ("1.0^", "1.0", 1), ("1.0^git1", "1.0", 1), ("1.0^git1", "1.0^git2", -1), ("1.0^git1", "1.01", -1),
    ("1.0^20160101", "1.0.1", -1), ("1.0^20160101^git1", "1.0^20160101", 1), ("1.0^20160102", "1.0^20160101^git1", 1),
    ("1.0~rc1^git1", "1.0~rc1", 1), ("1.0^git1~pre", "1.0^git1", -1), ("1.0^git1", "1.0~rc1", 1),
]


@pytest.mark.parametrize(("a", "b", "want"), RPM_CASES)
def test_rpmvercmp_follows_rpm(a: str, b: str, want: int) -> None:
    assert rpmvercmp(a, b) == want
    assert rpmvercmp(b, a) == -want


def test_rpm_epoch_version_release() -> None:
    assert split_evr("1:2.3-4.el9") == ("1", "2.3", "4.el9")
    assert split_evr("2.3-4.el9") == ("0", "2.3", "4.el9")
    assert split_evr("2.3") == ("0", "2.3", "")
    assert rpm_compare("1:1.0-1", "2.0-1") == 1  # the epoch wins
    assert rpm_compare("0:8.7p1-38.el9_4.1", "8.7p1-38.el9_4.1") == 0  # a missing epoch is 0
    assert rpm_compare("8.7p1-38.el9", "8.7p1-38.el9_4.1") == -1  # release compare
    assert rpm_compare("8.7p1-38.el9_4.1", "8.7p1-38.el9_4.10") == -1
    assert rpm_compare("8.7p1-37.el9_4.9", "8.7p1-38.el9") == -1
    assert rpm_compare("8.7p1-38.el9_4", "8.7p1-38.el9_4.1") == -1
    assert rpm_compare("1.0-1.fc40", "1.0-1.fc39") == 1
    assert rpm_compare("1.0~rc1-1", "1.0-1") == -1
    assert rpm_compare("1.0-1", "1.0") == 1  # a release beats no release


def test_dpkg_ordering_of_tricky_versions() -> None:
    assert dpkg_compare("1:1.0", "2.0") == 1  # epochs first
    assert dpkg_compare("1.0~rc1", "1.0") == -1  # tilde before the release
    assert dpkg_compare("1.0~~", "1.0~") == -1
    assert dpkg_compare("1.0-1", "1.0-2") == -1  # Debian revisions
    assert dpkg_compare("1.0-10", "1.0-9") == 1
    assert dpkg_compare("1.0-1ubuntu1", "1.0-1") == 1
    assert dpkg_compare("1.0-1build1", "1.0-1ubuntu1") == -1
    assert dpkg_compare("1.0+dfsg-1", "1.0-1") == 1
    assert dpkg_compare("1:9.6p1-3ubuntu13.3", "1:9.6p1-3ubuntu13.10") == -1
    assert dpkg_compare("1:9.2p1-2+deb12u3", "1:9.2p1-2") == 1
    assert dpkg_compare("2.36-9+deb12u4", "2.36-9+deb12u10") == -1
    assert dpkg_compare("1.0", "1.0-0") == 0  # no revision is revision 0
    assert compare("dpkg", "0:1.0", "1.0") == 0


_piece = st.text(alphabet="0123456789abcz.~^_+", min_size=0, max_size=8)


@given(_piece, _piece, _piece)
def test_rpmvercmp_is_a_total_order(a: str, b: str, c: str) -> None:
    assert rpmvercmp(a, a) == 0
    assert rpmvercmp(a, b) == -rpmvercmp(b, a)
    if rpmvercmp(a, b) <= 0 and rpmvercmp(b, c) <= 0 and "^" not in a + b + c:
        assert rpmvercmp(a, c) <= 0
