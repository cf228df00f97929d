"""A small self-contained HTML page for a detection report: tables plus one inline SVG chart.

The chart has one row per interesting host (an injected scenario, or any finding): finding scores over
time as stems, injected windows shaded, the warm-up greyed out; and one row per rolled-out family with
its rollout window and the rollout events the detectors reported. No scripts, no external files.
"""

from __future__ import annotations

from datetime import datetime, timedelta
from html import escape
from typing import Any

LABEL_W, PLOT_W, ROW_H, TOP = 250, 820, 34, 34
COLORS = {"compromise": "#e4572e", "stale_image": "#f3a712", "rollout": "#4c9be8", "rollback": "#8e7dbe"}
STEM = {
    "matched": "#1b7f3b",
    "false_alarm": "#c0392b",
    "warmup": "#9a9a9a",
    "rollout": "#6c3fb5",
    "image": "#2e86ab",
    "during_attack": "#e8a33d",
}


def _t(s: str) -> datetime:
    return datetime.fromisoformat(s)


def _stem_class(label: str) -> str:
    if label in ("false_alarm", "warmup", "image"):
        return label
    if label.startswith("during_attack:"):
        return "during_attack"
    return "rollout" if ":" in label else "matched"


def render_chart(report: dict[str, Any], host_cohort: dict[str, str], max_rows: int = 60) -> str:
    start, end = _t(report["start"]), _t(report["end"])
    span = max(1.0, (end - start).total_seconds())

    def x(t: datetime | str) -> float:
        t = _t(t) if isinstance(t, str) else t
        return LABEL_W + PLOT_W * min(1.0, max(0.0, (t - start).total_seconds() / span))

    windows: dict[str, list[dict[str, Any]]] = {}
    for s in report["scenarios"]:
        windows.setdefault(s["host_id"], []).append(s)
    by_host: dict[str, list[dict[str, Any]]] = {}
    for a in report["anomalies"]:
        by_host.setdefault(a["host_id"], []).append(a)
    hosts = sorted(windows, key=lambda h: windows[h][0]["start"])
    hosts += sorted((h for h in by_host if h not in windows), key=lambda h: (-max(a["score"] for a in by_host[h]), h))
    hidden = max(0, len(hosts) - max_rows)
    hosts = hosts[:max_rows]
    series_all = report.get("score_series", {})
    hosts += sorted(h for h, sr in series_all.items() if sr.get("reference"))
    families = report["rollouts"]
    rows = len(hosts) + len(families)
    height = TOP + rows * ROW_H + 30
    out = [
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{LABEL_W + PLOT_W + 20}" height="{height}" '
        f'font-family="sans-serif" font-size="11">'
    ]
    warm = x(report["warmup_end"])
    if warm > LABEL_W:
        out.append(
            f'<rect x="{LABEL_W}" y="{TOP - 6}" width="{warm - LABEL_W:.1f}" height="{rows * ROW_H + 6}" '
            'fill="#eeeeee"><title>warm-up: cohort baselines forming (counted apart)</title></rect>'
        )
        out.append(f'<text x="{LABEL_W + 4}" y="{TOP - 10}" fill="#777">warm-up</text>')
    for i in range(0, 7):  # time axis
        tx = LABEL_W + PLOT_W * i / 6
        minutes = span * i / 6 / 60
        out.append(f'<line x1="{tx:.1f}" y1="{TOP - 6}" x2="{tx:.1f}" y2="{TOP + rows * ROW_H}" stroke="#ddd"/>')
        out.append(
            f'<text x="{tx:.1f}" y="{TOP + rows * ROW_H + 14}" text-anchor="middle" fill="#555">'
            f"+{minutes:.1f} min</text>"
        )
    y = TOP
    for host in hosts:
        quiet = series_all.get(host, {}).get("reference", False)
        label = f"{host} ({host_cohort.get(host, '?')}{', typical peer' if quiet else ''})"
        out.append(f'<text x="4" y="{y + ROW_H * 0.6:.1f}">{escape(label)}</text>')
        out.append(
            f'<line x1="{LABEL_W}" y1="{y + ROW_H - 4}" x2="{LABEL_W + PLOT_W}" y2="{y + ROW_H - 4}" stroke="#bbb"/>'
        )
        for w in windows.get(host, []):
            color = COLORS.get(w["kind"], "#e4572e")
            x0, x1 = x(w["start"]), x(w["end"])
            out.append(
                f'<rect x="{x0:.1f}" y="{y + 2}" width="{max(2.0, x1 - x0):.1f}" height="{ROW_H - 6}" '
                f'fill="{color}" fill-opacity="0.22" stroke="{color}">'
                f"<title>{escape(w['scenario'])} ({escape(w['attack'])}) {w['start']} to {w['end']}</title>"
                "</rect>"
            )
            out.append(f'<text x="{x0 + 3:.1f}" y="{y + 12}" fill="{color}">{escape(w["attack"])}</text>')
        series = report.get("score_series", {}).get(host)
        if series:
            out.append(_score_line(series, report, x, y))
        for a in by_host.get(host, []):
            ax = x(a["time"])
            top = y + ROW_H - 4 - (ROW_H - 8) * max(0.05, min(1.0, float(a["score"])))
            color = STEM[_stem_class(a["label"])]
            tip = f"{a['time']} {a['kind']} score {a['score']:.2f} [{a['label']}]: {a['explanation']}"
            out.append(
                f'<line x1="{ax:.1f}" y1="{y + ROW_H - 4}" x2="{ax:.1f}" y2="{top:.1f}" stroke="{color}" '
                f'stroke-width="2"><title>{escape(tip)}</title></line>'
            )
            out.append(
                f'<circle cx="{ax:.1f}" cy="{top:.1f}" r="2.5" fill="{color}"><title>{escape(tip)}</title></circle>'
            )
        y += ROW_H
    for r in families:
        color = COLORS.get(r["kind"], "#4c9be8")
        out.append(
            f'<text x="4" y="{y + ROW_H * 0.6:.1f}">{escape(r["image_family"])} family ({escape(r["kind"])})</text>'
        )
        x0, x1 = x(r["start"]), x(r["end"])
        out.append(
            f'<rect x="{x0:.1f}" y="{y + 2}" width="{max(2.0, x1 - x0):.1f}" height="{ROW_H - 6}" '
            f'fill="{color}" fill-opacity="0.2" stroke="{color}"><title>{escape(r["scenario"])}: '
            f"{r['start']} to {r['end']}, {r['host_anomalies']} host anomalies</title></rect>"
        )
        for e in r["rollout_events"]:
            ex = x(e["time"])
            out.append(
                f'<line x1="{ex:.1f}" y1="{y + 2}" x2="{ex:.1f}" y2="{y + ROW_H - 4}" stroke="{color}" '
                f'stroke-width="2"><title>{escape(e["status"])} share {e["share"]:.2f}: '
                f"{escape(e['explanation'])}</title></line>"
            )
        y += ROW_H
    out.append("</svg>")
    if hidden:
        out.append(f"<p>{hidden} more hosts with findings are not drawn (see the anomalies table).</p>")
    return "\n".join(out)


def _score_line(series: dict[str, Any], report: dict[str, Any], x: Any, y: float) -> str:
    """The host's detector score per cycle (0 when nothing scored) as a thin polyline."""
    start, cycle = _t(report["start"]), float(report["cycle_s"])
    first, last = _t(series["first"]), _t(series["last"])
    k0 = max(0, int((first - start).total_seconds() // cycle))
    k1 = int((last - start).total_seconds() // cycle)
    points = dict((int(k), float(v)) for k, v in series["points"])
    base = y + ROW_H - 4
    coords = []
    for k in range(k0, k1 + 1):
        v = min(1.0, max(0.0, points.get(k, 0.0)))
        coords.append(f"{x(start + timedelta(seconds=(k + 1) * cycle)):.1f},{base - (ROW_H - 8) * v:.1f}")
    return (
        f'<polyline points="{" ".join(coords)}" fill="none" stroke="#555" stroke-width="1" '
        'stroke-opacity="0.7"><title>detector score per cycle</title></polyline>'
    )


DECAY_COLORS = ("#2e86ab", "#e4572e", "#1b7f3b", "#8e7dbe", "#f3a712", "#555555")


def render_decay_chart(decay: dict[str, Any], width: int = 680, height: int = 240) -> str:
    """Share of each image's hosts still matching the image's hardening check results, by host age: one line
    per image over the age buckets (hosts that did not live that long are not counted)."""
    ages, images = decay.get("ages") or [], decay.get("images") or []
    if not ages or not images:
        return ""
    height = max(height, 30 + 14 * len(images))  # room for the legend
    left, top, plot_w, plot_h = 60, 16, width - 260, height - 56
    step = plot_w / max(1, len(ages) - 1)

    def xy(i: int, share: float) -> tuple[float, float]:
        return left + (step * i if len(ages) > 1 else plot_w / 2), top + plot_h * (1.0 - share)

    out = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" font-family="sans-serif" '
           'font-size="11">']
    for k in range(0, 5):  # share axis
        y = top + plot_h * k / 4
        out.append(f'<line x1="{left}" y1="{y:.1f}" x2="{left + plot_w}" y2="{y:.1f}" stroke="#ddd"/>')
        out.append(f'<text x="{left - 6}" y="{y + 4:.1f}" text-anchor="end" fill="#555">{100 - 25 * k}%</text>')
    for i, label in enumerate(ages):
        x, _ = xy(i, 0.0)
        out.append(f'<text x="{x:.1f}" y="{top + plot_h + 16}" text-anchor="middle" fill="#555">'
                   f"{escape(label)}</text>")
    out.append(f'<text x="{left + plot_w / 2:.1f}" y="{height - 8}" text-anchor="middle" fill="#333">host age</text>')
    for n, img in enumerate(images):
        color = DECAY_COLORS[n % len(DECAY_COLORS)]
        points = []
        for i, label in enumerate(ages):
            c = img["compliance"].get(label) or {}
            if c.get("share") is None:
                continue
            x, y = xy(i, float(c["share"]))
            tip = f"{img['image_id']} at {label}: {c['matching']} of {c['eligible']} hosts match the image"
            points.append(f"{x:.1f},{y:.1f}")
            out.append(f'<circle cx="{x:.1f}" cy="{y:.1f}" r="3" fill="{color}"><title>{escape(tip)}</title></circle>')
        if len(points) > 1:
            out.append(f'<polyline points="{" ".join(points)}" fill="none" stroke="{color}" stroke-width="2"/>')
        ly = top + 14 * n + 8
        out.append(f'<rect x="{left + plot_w + 14}" y="{ly - 8}" width="10" height="10" fill="{color}"/>')
        out.append(f'<text x="{left + plot_w + 28}" y="{ly + 1}">{escape(img["image_id"][:28])} '
                   f"({escape(img['image_family'])})</text>")
    out.append("</svg>")
    return "\n".join(out)


def render_decay(decay: dict[str, Any]) -> list[str]:
    """The report's hardening decay section: the chart and a table per image (empty without judged images)."""
    chart = render_decay_chart(decay)
    if not chart:
        return []

    def cell(c: dict[str, Any]) -> str:
        return "-" if not c or c.get("share") is None else f"{c['matching']}/{c['eligible']} ({c['share']:.0%})"

    ages = decay["ages"]
    rows = ["<tr>" + "".join(f"<th>{escape(h)}</th>" for h in
                             ["image", "family", "hosts", "destroyed", "checks failing (image)",
                              *[f"match at {a}" for a in ages], "drifted hosts"]) + "</tr>"]
    for img in decay["images"]:
        drifted = "; ".join(f"{d['host_id']}{' (gone)' if d['gone'] else ''}: {', '.join(d['checks'])}"
                            for d in img["drifted"][:20])
        cells = [img["image_id"], img["image_family"], img["hosts"], img["gone"], len(img["failing"]),
                 *[cell(img["compliance"].get(a) or {}) for a in ages], drifted or "none"]
        rows.append("<tr>" + "".join(f"<td>{escape(str(c))}</td>" for c in cells) + "</tr>")
    return [
        "<h2>Hardening decay</h2>",
        "<p>Share of each image's hosts whose configuration still passes every hardening check the image passes, "
        "by host age (a host is counted at an age only if it lived that long; destroyed hosts included). "
        "Checks the image itself fails are the image's (fix its bake pipeline) and do not count here.</p>",
        chart,
        "<table>",
        *rows,
        "</table>",
    ]


def render_html(report: dict[str, Any], host_cohort: dict[str, str]) -> str:
    s = report["summary"]
    t = report["targets"]

    def row(cells: list[Any], tag: str = "td") -> str:
        return "<tr>" + "".join(f"<{tag}>{escape(str(c))}</{tag}>" for c in cells) + "</tr>"

    def ok(v: bool | None) -> str:
        return "n/a" if v is None else "met" if v else "MISSED"

    parts = [
        "<!doctype html><html><head><meta charset='utf-8'>",
        f"<title>herdwatch evaluation: {escape(report['scenario'])}</title>",
        "<style>body{font-family:sans-serif;margin:20px;color:#222}table{border-collapse:collapse;"
        "margin:8px 0 18px}td,th{border:1px solid #ccc;padding:3px 8px;font-size:12px;text-align:left;"
        "vertical-align:top}th{background:#f3f3f3}"
        ".legend span{display:inline-block;margin-right:14px}</style>",
        "</head><body>",
        f"<h1>herdwatch evaluation: {escape(report['scenario'])} (seed {report['seed']})</h1>",
        f"<p>{escape(report['start'])} to {escape(report['end'])}, warm-up until "
        f"{escape(report['warmup_end'])}; {report['run']['hosts']} hosts, "
        f"{report['run']['events']:,} events, "
        f"{report['run']['cycles']} cycles of {report['cycle_s']:g} s.</p>",
        "<h2>Summary</h2><table>",
        row(
            [
                "precision",
                "recall",
                "detected",
                "mean time to detect",
                "false alarms",
                "per 1,000 host-hours",
                "rollout host anomalies",
                "warm-up findings",
            ],
            "th",
        ),
        row(
            [
                s["precision"],
                s["recall"],
                f"{s['detected']} / {s['injected']}",
                f"{s['mean_time_to_detect_s']} s",
                s["false_alarms"],
                s["false_alarms_per_1000_host_hours"],
                s["rollout_host_anomalies"],
                s["warmup_findings"],
            ]
        ),
        "</table><table>",
        row(["target", "result"], "th"),
        *[row([name.replace("_", " "), ok(v)]) for name, v in t.items()],
        "</table>",
        "<h2>Score over time</h2>",
        "<p class='legend'><span style='color:#e4572e'>&#9632; compromise window</span>"
        "<span style='color:#f3a712'>&#9632; stale image</span>"
        "<span style='color:#4c9be8'>&#9632; rollout</span>"
        "<span style='color:#8e7dbe'>&#9632; rollback</span>"
        "<span style='color:#1b7f3b'>| matched finding</span>"
        "<span style='color:#c0392b'>| false alarm</span>"
        "<span style='color:#6c3fb5'>| false alarm in a rollout or fleet event window</span>"
        "<span style='color:#2e86ab'>| image-level finding</span>"
        "<span style='color:#9a9a9a'>| warm-up finding</span> (stem height = finding score; the grey "
        "line is the host's highest detector score per cycle; hover for explanations)</p>",
        render_chart(report, host_cohort),
        *render_decay(report.get("hardening_decay") or {}),
        "<h2>Injected scenarios</h2><table>",
        row(
            [
                "scenario",
                "attack",
                "host",
                "start",
                "detected",
                "time to detect (s)",
                "findings",
                "first explanation",
            ],
            "th",
        ),
    ]
    for sc in report["scenarios"]:
        first = sc["first_finding"]["explanation"] if sc["first_finding"] else ""
        parts.append(
            row(
                [
                    sc["scenario"],
                    sc["attack"],
                    sc["host_id"],
                    sc["start"],
                    sc["detected"],
                    sc["time_to_detect_s"],
                    sc["findings"],
                    first,
                ]
            )
        )
    parts += [
        "</table><h2>Rollouts</h2><table>",
        row(["scenario", "kind", "family", "window", "host anomalies", "statuses reported"], "th"),
    ]
    for r in report["rollouts"]:
        parts.append(
            row(
                [
                    r["scenario"],
                    r["kind"],
                    r["image_family"],
                    f"{r['start']} to {r['end']}",
                    r["host_anomalies"],
                    ", ".join(r["statuses_reported"]) or "none",
                ]
            )
        )
    parts += [
        "</table><h2>Findings</h2><table>",
        row(["time", "host", "kind", "score", "label", "explanation"], "th"),
    ]
    for a in report["anomalies"][:300]:
        parts.append(row([a["time"], a["host_id"], a["kind"], f"{a['score']:.2f}", a["label"], a["explanation"]]))
    parts.append("</table></body></html>")
    return "\n".join(parts)
