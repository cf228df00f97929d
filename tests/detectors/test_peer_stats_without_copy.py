"""PeerDeviation leaves the judged host's value out of the peers' sorted view by index (no copy) and computes
the MAD only for a material difference: the median, scale and z are exactly what the copying computation
gave (kept here as the reference) for any view, host value and metric."""

from __future__ import annotations

import math
from bisect import bisect_left

from hypothesis import given, settings
from hypothesis import strategies as st

from detectors.peers import PeerDeviation, _median_sorted

values = st.floats(min_value=-1e9, max_value=1e9, allow_nan=False, allow_infinity=False)


def reference(arr: list[float], own: float | None) -> tuple[float, float, int]:
    """stats() as it was: copy the view without the host's value, median, 1.4826 * MAD (mean when 0)."""
    if own is not None:
        i = bisect_left(arr, own)
        arr = arr[:i] + arr[i + 1 :]
    n = len(arr)
    if n == 0:
        return 0.0, 0.0, 0
    med = _median_sorted(arr)
    dev = sorted([abs(x - med) for x in arr])
    scale = 1.4826 * _median_sorted(dev)
    if scale == 0.0:
        scale = math.fsum(dev) / n
    return med, scale, n


class OneView(PeerDeviation):
    """A PeerDeviation whose view is given (the judged host is "h" when its value is in it)."""

    def __init__(self, arr: list[float], own: float | None, **kwargs: object) -> None:
        super().__init__(**kwargs)  # type: ignore[arg-type]
        self.arr = arr
        self.by_host = {"h": own} if own is not None else {}

    def _view(self, image: str, metric: str, cut: float, window: float, now: float) -> tuple[list[float],
                                                                                             dict[str, float]]:
        return self.arr, self.by_host  # type: ignore[return-value]


@settings(max_examples=400, deadline=None)
@given(st.lists(values, max_size=40), st.booleans(), st.integers(0, 39), values,
       st.sampled_from(["cpu_pct", "conns", "net_bytes_out"]), st.booleans())
def test_stats_and_deviation_are_what_the_copying_computation_gave(
        peers: list[float], with_own: bool, pick: int, value: float, metric: str, two_sided: bool) -> None:
    arr = sorted(peers)
    own = arr[pick % len(arr)] if with_own and arr else None
    p = OneView(arr, own, two_sided=two_sided)
    med, scale, n = reference(arr, own)
    assert p.stats("img", metric, 0.0, "h", (0.0, 1.0)) == (med, scale, n)
    z, dmed, dscale, dn = p.deviation("img", metric, value, 0.0, "h", (0.0, 1.0))
    assert (dmed, dn) == (med, n)
    if n < p.min_peers or (not two_sided and value - med < 0) or \
            abs(value - med) < max(p.min_abs.get(metric, 0.0), p.min_rel * abs(med), 1e-9):
        assert z == 0.0 and dscale == 0.0
    else:
        assert dscale == scale and z == (value - med) / max(scale, 0.05 * abs(med), 1e-9)
