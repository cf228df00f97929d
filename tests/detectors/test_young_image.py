"""Two lab false alarms and their rules.

1. A young image has no basis for campaigns. In `make lab`, a job of the worker image runs `hostname` every
   few seconds; it lives a millisecond and most of its execs were read without a command line (no `proc:`
   feature). The first whole reads came on one, then two hosts of the two-minute-old image: reported as
   rare, then as a campaign, then again each time another clone read it whole. An image whose history (its
   own and that of the images it replaced) spans less than `campaign_after_s` when a behaviour first shows
   judges it on several hosts as its own, and what it reports on one host is not followed to the clones
   (except a program run from /tmp or a hidden directory).
2. A sample caught twice is not a presence. In the long lab run, a new image's job curled a local exporter
   in a connection of milliseconds; the polling network probe caught it on one host, it left at once (a
   sample), and the same host caught it again just as its judgement was made: reported as rare. A host that
   lost the feature during the wait and shows it again is not counted.
"""

from __future__ import annotations

from det_helpers import advance, findings, join, obs
from hypothesis import given, settings
from hypothesis import strategies as st

from contract.findings import FindingKind
from detectors import EngineConfig, FamilyEngine

HOSTNAME = "proc:/usr/bin/hostname|hostname|root"
MINER = "proc:/tmp/.cache/kworkerds|/tmp/.cache/kworkerds|root"
EXPORTER = "dest:tcp/9100@local"


def spread(feature: str, born: float, reads: list[float], n: int = 4) -> list:  # type: ignore[type-arg]
    """`n` clones of a new image joining at `born`; host i shows `feature` from reads[i] (event seconds) on."""
    engine = FamilyEngine(config=EngineConfig(host_timeout_s=1e6))
    out = join(engine, "worker-v1", n, s=born, family="worker")
    t = born
    for i, when in sorted(enumerate(reads), key=lambda x: x[1]):
        out += advance(engine, t, when - 0.001)
        t = when
        out += engine.process(obs(f"worker-v1-h{i:02d}", "worker-v1", when, (feature,), family="worker"))
    out += advance(engine, t, t + 900.0)
    return [f for f in findings(out) if f.subject == feature]


def test_a_young_images_job_read_whole_on_its_clones_one_by_one_is_no_campaign() -> None:
    # the make lab run: first whole reads at 56 s, 89 s, then 3.5 and 5.4 minutes into the image's life
    fs = spread(HOSTNAME, 0.0, [56.0, 89.0, 210.0, 325.0])
    assert [f.kind for f in fs] == [FindingKind.RARE_FEATURE]  # the first host, in the image's first minute
    assert fs[0].host_id == "worker-v1-h00"


def test_the_same_spread_in_an_established_image_is_a_campaign() -> None:
    fs = spread(HOSTNAME, -3600.0, [56.0, 89.0, 210.0, 325.0])
    assert FindingKind.CAMPAIGN in [f.kind for f in fs]
    campaign = next(f for f in fs if f.kind == FindingKind.CAMPAIGN)
    assert {"worker-v1-h00", "worker-v1-h01"} <= set(campaign.details["hosts"])


def test_a_miner_from_tmp_reported_in_a_young_image_is_still_followed_to_its_clones() -> None:
    fs = spread(MINER, 0.0, [60.0, 400.0], n=6)
    assert [f.kind for f in fs] == [FindingKind.RARE_FEATURE, FindingKind.CAMPAIGN]
    assert fs[1].details["hosts"] == ["worker-v1-h00", "worker-v1-h01"]


@settings(max_examples=40, deadline=None)
@given(
    first=st.floats(1.0, 179.0),
    later=st.lists(st.floats(0.0, 900.0), min_size=1, max_size=5),
)
def test_a_young_image_reports_a_spreading_behaviour_once_at_most(first: float, later: list[float]) -> None:
    """Whatever the order and timing of the clones' first whole reads, if the first comes while the image is
    young: no campaign, and no finding but on the first host."""
    fs = spread(HOSTNAME, 0.0, [first, *[first + d for d in later]], n=1 + len(later) + 2)
    assert FindingKind.CAMPAIGN not in [f.kind for f in fs]
    assert {f.host_id for f in fs} <= {"worker-v1-h00"}


def sampled(again_at: float | None, lost_at: float | None) -> list[str]:
    """10 established clones; h03 catches EXPORTER at 100 s, loses it at `lost_at` (a sample leaves at once)
    and catches it again at `again_at`; the judgement is due at 130 s."""
    engine = FamilyEngine(config=EngineConfig(host_timeout_s=1e6))
    out = join(engine, "web-v2", 10, s=-3600.0, family="web")
    out += engine.process(obs("web-v2-h03", "web-v2", 100.0, (EXPORTER,), family="web"))
    if lost_at is not None:
        out += engine.process(obs("web-v2-h03", "web-v2", lost_at, removed=(EXPORTER,), family="web"))
    if again_at is not None:
        out += engine.process(obs("web-v2-h03", "web-v2", again_at, (EXPORTER,), family="web"))
    out += advance(engine, 100.0, 400.0)
    return [f.host_id for f in findings(out) if f.subject == EXPORTER]


def test_a_sample_caught_again_at_its_judgement_is_not_reported() -> None:
    assert sampled(again_at=129.9, lost_at=105.0) == []
    assert sampled(again_at=None, lost_at=105.0) == []  # the sample alone: gone at its judgement


def test_a_connection_that_stays_is_reported() -> None:
    assert sampled(again_at=None, lost_at=None) == ["web-v2-h03"]
    assert sampled(again_at=None, lost_at=200.0) == ["web-v2-h03"]  # lost after it was judged
