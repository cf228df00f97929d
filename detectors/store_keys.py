"""The key families of the engine's store: each one named once, with how its keys are built and parsed.

A store key is `<tag>|<part>|<part>...`. Every part but the last is a host, image or family name (which
never contain "|"); the last part may be a feature or a finding subject and may contain "|". The first
part says whom a key belongs to (`owner`: a host, an image or a family), which is how an engine that
shares its store with others picks out its own keys.

    HOST             h|<host>               HostEntry: image, family, first and last seen
    HOST_FEATURES    x|<host>               the host's current feature list
    COHORT_SIZE      n|<image>              live hosts of the image
    FEATURE_COUNT    f|<image>|<feature>    FeatureCount: hosts showing it, first seen
    HOST_METRICS     m|<image>|<host>       MetricReport: the host's latest metrics
    IMAGE            i|<family>|<image>     first seen of the image in its family
    PENDING          p|<image>|<feature>    PendingJudgement (feature "-<f>": f went missing)
    SUPPRESSED       s|<host>|<subject>     when the finding was last reported (host "image:<image>" for
                                            findings about a whole image)
    STREAKS          k|<host>               {metric: consecutive deviating reports}
    ROLLOUT          r|<family>             RolloutState
    HISTORY          y|<image>|<feature>    FeatureHistory: behaviour the image has shown within history_s
    LINEAGE          l|<image>              ImageLineage: the images it replaced in its family (rollouts)
    METRIC_HISTORY   z|<host>               the host's own metric history and metric calibration
                                            (written every history_checkpoint_s)
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

Owner = Literal["host", "image", "family"]

SEP = "|"


@dataclass(frozen=True)
class KeyFamily:
    """One family of store keys: its tag and the names of its parts (the first names the owner)."""

    tag: str
    parts: tuple[str, ...]

    @property
    def prefix(self) -> str:
        return self.tag + SEP

    @property
    def owner(self) -> Owner:
        first = self.parts[0]
        if first not in ("host", "image", "family"):
            raise ValueError(f"key family {self.tag!r} starts with {first!r}, not a host, image or family")
        return first  # type: ignore[return-value]

    def key(self, *parts: str) -> str:
        if len(parts) != len(self.parts):
            raise ValueError(f"key family {self.tag!r} takes {len(self.parts)} part(s) {self.parts}, got {parts}")
        return self.prefix + SEP.join(parts)

    def holds(self, key: str) -> bool:
        return key.startswith(self.prefix)

    def parse(self, key: str) -> tuple[str, ...]:
        """The parts of one of this family's keys (the last part keeps any "|" it contains)."""
        if not self.holds(key):
            raise ValueError(f"{key!r} is not a {self.tag!r} key")
        parts = tuple(key[len(self.prefix) :].split(SEP, len(self.parts) - 1))
        if len(parts) != len(self.parts):
            raise ValueError(f"{key!r} has {len(parts)} part(s), a {self.tag!r} key has {len(self.parts)}")
        return parts


HOST = KeyFamily("h", ("host",))
HOST_FEATURES = KeyFamily("x", ("host",))
COHORT_SIZE = KeyFamily("n", ("image",))
FEATURE_COUNT = KeyFamily("f", ("image", "feature"))
HOST_METRICS = KeyFamily("m", ("image", "host"))
IMAGE = KeyFamily("i", ("family", "image"))
PENDING = KeyFamily("p", ("image", "feature"))
SUPPRESSED = KeyFamily("s", ("host", "subject"))
STREAKS = KeyFamily("k", ("host",))
ROLLOUT = KeyFamily("r", ("family",))
HISTORY = KeyFamily("y", ("image", "feature"))
LINEAGE = KeyFamily("l", ("image",))
METRIC_HISTORY = KeyFamily("z", ("host",))

KEY_FAMILIES = (
    HOST,
    HOST_FEATURES,
    COHORT_SIZE,
    FEATURE_COUNT,
    HOST_METRICS,
    IMAGE,
    PENDING,
    SUPPRESSED,
    STREAKS,
    ROLLOUT,
    HISTORY,
    LINEAGE,
    METRIC_HISTORY,
)
_BY_TAG = {kf.tag: kf for kf in KEY_FAMILIES}

IMAGE_SUBJECT_PREFIX = "image:"
"""SUPPRESSED keys of findings about a whole image use "image:<image>" in place of the host."""


def family_of_key(key: str) -> KeyFamily | None:
    """The key family a store key belongs to (None for a key that is not the engine's)."""
    tag, sep, _ = key.partition(SEP)
    return _BY_TAG.get(tag) if sep else None


def owner_of_key(key: str) -> tuple[Owner, str] | None:
    """Whom a store key belongs to: ("host" | "image" | "family", name); None for a key not the engine's."""
    kf = family_of_key(key)
    if kf is None:
        return None
    first = key[len(kf.prefix) :].split(SEP, 1)[0]
    if kf is SUPPRESSED and first.startswith(IMAGE_SUBJECT_PREFIX):
        return "image", first[len(IMAGE_SUBJECT_PREFIX) :]
    return kf.owner, first
