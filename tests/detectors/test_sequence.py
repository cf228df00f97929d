from det_helpers import EventMaker

from contract.events import Kind
from detectors import FindingKind, SequenceGap

HB = {"events_sent": 1, "events_dropped": 0}


def test_gap_is_reported_with_missing_count() -> None:
    ev = EventMaker()
    sg = SequenceGap()
    assert sg.check(ev(Kind.HEARTBEAT, 0, HB, seq=5)) is None
    assert sg.check(ev(Kind.HEARTBEAT, 1, HB, seq=6)) is None
    f = sg.check(ev(Kind.HEARTBEAT, 2, HB, seq=20))
    assert f is not None and f.kind == FindingKind.DATA_LOSS and f.details["missing"] == 13
    assert "h1" in f.explanation


def test_duplicates_and_reboots_are_not_gaps() -> None:
    ev = EventMaker()
    sg = SequenceGap()
    sg.check(ev(Kind.HEARTBEAT, 0, HB, seq=10))
    assert sg.check(ev(Kind.HEARTBEAT, 1, HB, seq=10)) is None
    assert sg.check(ev(Kind.HEARTBEAT, 1, HB, seq=9)) is None
    reboot = ev(Kind.HELLO, 2, {"agent_version": "1", "boot_time": 0}, seq=0).replace(boot_id="b2")
    assert sg.check(reboot) is None
    again = SequenceGap.from_dict(sg.to_dict())
    assert again.check(ev(Kind.HEARTBEAT, 3, HB, seq=1).replace(boot_id="b2")) is None
    assert again.check(ev(Kind.HEARTBEAT, 3, HB, seq=3).replace(boot_id="b2")) is not None
