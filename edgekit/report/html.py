"""A gate result as one self-contained HTML page: verdict at a glance, plots, tables.

No external resources, no scripts: inline CSS and hand-drawn inline SVG (stdlib only), so the file
can be attached to a CI run, mailed, or opened offline. Plots:

* latency distribution per variant (one row per report): box = p25-p75, line = median, whiskers =
  p1-p99 of the pooled timed samples, dots = per-trial medians, diamond = p95, triangle = the 95%
  upper bound the gate judges; the target's latency budget as a dashed red line; a baseline's
  distribution (``--baseline``) drawn in grey under its variant;
* accuracy vs p95 latency per target, marker area proportional to model size, the Pareto front
  (no other variant is at least as fast, as accurate and as small, and better in one) ringed and
  joined; the latency budget and the lowest accuracy the drop budget allows as dashed lines;
* peak memory per variant against its budget.
Then one table per report with every check. The page holds no timestamp: the same result gives
the same bytes.
"""

from __future__ import annotations

import html
import math
from typing import TYPE_CHECKING, Any, Iterable

if TYPE_CHECKING:  # pragma: no cover
    from ..checks import GateResult

COLORS = {"pass": "#1a7f37", "fail": "#cf222e", "warn": "#9a6700", "skip": "#6e7781", "inconclusive": "#8250df"}
PALETTE = ["#0969da", "#bc4c00", "#1a7f37", "#8250df", "#bf3989", "#0a7f8f", "#953800", "#57606a"]
FONT = "font-family:system-ui,-apple-system,Segoe UI,Helvetica,Arial,sans-serif"


def esc(x: Any) -> str:
    return html.escape(str(x), quote=True)


def _f(x: float | None, unit: str = "") -> str:
    if x is None:
        return "-"
    return f"{x:.4g}{(' ' + unit) if unit else ''}"


def nice_ticks(lo: float, hi: float, n: int = 5) -> list[float]:
    """Round tick values covering [lo, hi] (about n of them)."""
    if not (math.isfinite(lo) and math.isfinite(hi)) or hi <= lo:
        hi = lo + 1.0
    raw = (hi - lo) / max(n, 1)
    mag = 10 ** math.floor(math.log10(raw))
    step = next(m * mag for m in (1, 2, 2.5, 5, 10) if m * mag >= raw)
    start = math.floor(lo / step) * step
    ticks, t = [], start
    while t <= hi + step * 1e-9:
        ticks.append(round(t, 12))
        t += step
    return ticks


class Scale:
    def __init__(self, lo: float, hi: float, a: float, b: float):
        self.lo, self.hi, self.a, self.b = lo, hi if hi > lo else lo + 1.0, a, b

    def __call__(self, v: float) -> float:
        return self.a + (v - self.lo) / (self.hi - self.lo) * (self.b - self.a)


OFF_SCALE = 3.0   # a budget more than 3x the largest figure is drawn at the axis end, marked off scale


def axis_max(data: Iterable[float | None], refs: Iterable[float | None]) -> float:
    """Upper end of a value axis: the data, and the reference lines that are not far beyond it
    (so that a generous budget does not squash the distribution into a corner)."""
    top = max([d for d in data if d is not None] or [1.0])
    near = [r for r in refs if r is not None and r <= OFF_SCALE * top]
    return max([top] + near) * 1.08


def _ref_x(sx: "Scale", v: float) -> tuple[float, bool]:
    """x of a reference line, clipped to the axis end when off scale."""
    return (sx(v), False) if v <= sx.hi else (sx.b, True)


def _quantile(ordered: list[float], p: float) -> float:
    return ordered[max(math.ceil(len(ordered) * p) - 1, 0)]


def latency_summary(report: dict[str, Any]) -> dict[str, Any] | None:
    """Box-plot figures from the pooled samples (or the summary when the report has none)."""
    lat = report.get("latency") or {}
    pooled = sorted(s for t in lat.get("samples_ms") or [] for s in t)
    meds = [m for m in lat.get("trial_medians") or [] if m is not None]
    if pooled:
        from ..checks import quantile_ucb
        ucb = quantile_ucb(pooled)[0]
        return {"p1": _quantile(pooled, 0.01), "p25": _quantile(pooled, 0.25), "p50": _quantile(pooled, 0.5),
                "p75": _quantile(pooled, 0.75), "p95": _quantile(pooled, 0.95), "p99": _quantile(pooled, 0.99),
                "ucb": ucb, "n": len(pooled), "medians": meds}
    if lat.get("p50") is None:
        return None
    return {"p1": lat.get("min", lat["p50"]), "p25": lat["p50"], "p50": lat["p50"], "p75": lat.get("p90", lat["p50"]),
            "p95": lat.get("p95", lat["p50"]), "p99": lat.get("p99", lat.get("max", lat["p50"])),
            "ucb": None, "n": lat.get("n"), "medians": meds}


def _svg(width: int, height: int, kind: str, title: str, body: Iterable[str]) -> str:
    return (f'<svg class="plot" data-plot="{esc(kind)}" xmlns="http://www.w3.org/2000/svg" role="img" '
            f'width="{width}" height="{height}" viewBox="0 0 {width} {height}" style="{FONT};font-size:12px">'
            f"<title>{esc(title)}</title>" + "".join(body) + "</svg>")


def _x_axis(sx: Scale, y: float, top: float, label: str) -> list[str]:
    out = [f'<line class="axis" x1="{sx.a:.1f}" y1="{y:.1f}" x2="{sx.b:.1f}" y2="{y:.1f}" stroke="#57606a"/>']
    for t in nice_ticks(sx.lo, sx.hi):
        if sx.lo - 1e-12 <= t <= sx.hi + 1e-12:
            x = sx(t)
            out.append(f'<line x1="{x:.1f}" y1="{top:.1f}" x2="{x:.1f}" y2="{y:.1f}" stroke="#d0d7de" '
                       f'stroke-dasharray="2,3"/><text x="{x:.1f}" y="{y + 15:.1f}" text-anchor="middle" '
                       f'fill="#57606a">{t:g}</text>')
    out.append(f'<text x="{(sx.a + sx.b) / 2:.1f}" y="{y + 32:.1f}" text-anchor="middle" fill="#24292f">{esc(label)}</text>')
    return out


def _y_axis(sy: Scale, x: float, right: float, label: str) -> list[str]:
    out = [f'<line class="axis" x1="{x:.1f}" y1="{sy.a:.1f}" x2="{x:.1f}" y2="{sy.b:.1f}" stroke="#57606a"/>']
    for t in nice_ticks(sy.lo, sy.hi):
        if sy.lo - 1e-12 <= t <= sy.hi + 1e-12:
            y = sy(t)
            out.append(f'<line x1="{x:.1f}" y1="{y:.1f}" x2="{right:.1f}" y2="{y:.1f}" stroke="#d0d7de" '
                       f'stroke-dasharray="2,3"/><text x="{x - 6:.1f}" y="{y + 4:.1f}" text-anchor="end" '
                       f'fill="#57606a">{t:g}</text>')
    mid = (sy.a + sy.b) / 2
    out.append(f'<text x="{x - 48:.1f}" y="{mid:.1f}" text-anchor="middle" fill="#24292f" '
               f'transform="rotate(-90 {x - 48:.1f} {mid:.1f})">{esc(label)}</text>')
    return out


def _box(s: dict[str, Any], sx: Scale, yc: float, h: float, color: str, cls: str) -> list[str]:
    y0, y1 = yc - h / 2, yc + h / 2
    out = [f'<g class="{cls}"><line x1="{sx(s["p1"]):.1f}" y1="{yc:.1f}" x2="{sx(s["p99"]):.1f}" y2="{yc:.1f}" '
           f'stroke="{color}"/>',
           f'<line x1="{sx(s["p1"]):.1f}" y1="{y0 + h / 4:.1f}" x2="{sx(s["p1"]):.1f}" y2="{y1 - h / 4:.1f}" stroke="{color}"/>',
           f'<line x1="{sx(s["p99"]):.1f}" y1="{y0 + h / 4:.1f}" x2="{sx(s["p99"]):.1f}" y2="{y1 - h / 4:.1f}" stroke="{color}"/>',
           f'<rect class="box" x="{sx(s["p25"]):.1f}" y="{y0:.1f}" width="{max(sx(s["p75"]) - sx(s["p25"]), 1.5):.1f}" '
           f'height="{h:.1f}" fill="{color}" fill-opacity="0.25" stroke="{color}"/>',
           f'<line class="median" x1="{sx(s["p50"]):.1f}" y1="{y0:.1f}" x2="{sx(s["p50"]):.1f}" y2="{y1:.1f}" '
           f'stroke="{color}" stroke-width="2.5"/>']
    for m in s["medians"]:
        out.append(f'<circle class="trial-median" cx="{sx(m):.1f}" cy="{y1 + 4:.1f}" r="2.2" fill="{color}"/>')
    x95 = sx(s["p95"])
    out.append(f'<path class="p95" d="M{x95:.1f},{yc - 5:.1f} l5,5 l-5,5 l-5,-5 z" fill="#fff" stroke="{color}"/>')
    if s.get("ucb") is not None:
        xu = sx(s["ucb"])
        out.append(f'<path class="ucb" d="M{xu:.1f},{y0 - 1:.1f} l-5,-8 l10,0 z" fill="{color}"/>')
    out.append("</g>")
    return out


def latency_plot(result: "GateResult") -> str:
    rows: list[tuple[str, dict[str, Any], dict[str, Any] | None, float | None, bool]] = []
    for i, r in enumerate(result.reports):
        s = latency_summary(r)
        if s is None:
            continue
        base = result.baselines[i] if i < len(result.baselines) else None
        bs = latency_summary(base) if base else None
        budget = ((r.get("target") or {}).get("budget") or {}).get("latency_p95_ms")
        rows.append((f"{r['bundle']['name']} ({(r.get('target') or {}).get('name', '?')})", s, bs, budget,
                     bool((r.get("environment") or {}).get("emulated"))))
    if not rows:
        return '<p class="noplot">No latency figures in these reports.</p>'
    left, right, top, row_h = 210, 30, 30, 58
    width = 860
    height = top + row_h * len(rows) + 60
    hi = axis_max([max(s["p99"], s.get("ucb") or 0, (bs or {}).get("p99", 0)) for _, s, bs, _, _ in rows],
                  [b for _, _, _, b, _ in rows])
    sx = Scale(0.0, hi, left, width - right)
    body = _x_axis(sx, top + row_h * len(rows), top - 6, "latency per inference (ms), batch 1")
    for k, (label, s, bs, budget, emulated) in enumerate(rows):
        yc = top + row_h * k + row_h / 2 - (6 if bs else 0)
        color = PALETTE[k % len(PALETTE)]
        body.append(f'<text class="variant" x="{left - 10}" y="{yc + 4:.1f}" text-anchor="end" fill="#24292f">'
                    f'{esc(label)}{" [emulated]" if emulated else ""}</text>')
        body += _box(s, sx, yc, 16, color, "variant-box")
        if bs:
            body += _box(bs, sx, yc + 22, 8, "#8c959f", "baseline-box")
            body.append(f'<text x="{left - 10}" y="{yc + 26:.1f}" text-anchor="end" fill="#6e7781" '
                        f'font-size="10">baseline</text>')
        if budget is not None:
            x, off = _ref_x(sx, budget)
            y0, y1 = top + row_h * k + 2, top + row_h * (k + 1) - 2
            body.append(f'<line class="budget" x1="{x:.1f}" y1="{y0:.1f}" x2="{x:.1f}" y2="{y1:.1f}" '
                        f'stroke="{COLORS["fail"]}" stroke-width="2" stroke-dasharray="6,4"/>'
                        f'<text x="{x - 3:.1f}" y="{y0 + 10:.1f}" text-anchor="end" fill="{COLORS["fail"]}" '
                        f'font-size="10">budget {budget:g} ms{" (off scale &#9656;)" if off else ""}</text>')
    legend = ("box p25-p75, line median, whiskers p1-p99; dots: per-trial medians; "
              "diamond: p95; triangle: 95% upper bound of p95 (what the gate judges); dashed red: budget")
    body.append(f'<text x="{left}" y="{height - 6}" fill="#57606a" font-size="11">{esc(legend)}</text>')
    return _svg(width, height, "latency", "Latency distribution per variant", body)


def pareto_front(points: list[tuple[float, float, float]]) -> list[int]:
    """Indices of the non-dominated points of (latency, -accuracy, size): lower is better on all."""
    front = []
    for i, (li, ai, si) in enumerate(points):
        dominated = any(lj <= li and aj >= ai and sj <= si and (lj < li or aj > ai or sj < si)
                        for j, (lj, aj, sj) in enumerate(points) if j != i)
        if not dominated:
            front.append(i)
    return front


def _point_data(result: "GateResult") -> dict[str, list[dict[str, Any]]]:
    groups: dict[str, list[dict[str, Any]]] = {}
    for r in result.reports:
        s = latency_summary(r)
        acc = (r.get("accuracy") or {}).get("value")
        if s is None or acc is None:
            continue
        target = r.get("target") or {}
        budget = target.get("budget") or {}
        src = (r.get("accuracy") or {}).get("source_value")
        groups.setdefault(target.get("name") or "?", []).append({
            "name": r["bundle"]["name"], "latency": s["p95"], "accuracy": float(acc),
            "size": float(r.get("model_size_mb") or 0.0), "latency_budget": budget.get("latency_p95_ms"),
            "min_accuracy": (src - budget["max_accuracy_drop"]) if src is not None and budget.get("max_accuracy_drop") is not None else None})
    return groups


def tradeoff_plot(target: str, pts: list[dict[str, Any]]) -> str:
    width, height, left, right, top, bottom = 660, 360, 80, 200, 30, 56
    lat_budget = next((p["latency_budget"] for p in pts if p["latency_budget"] is not None), None)
    min_acc = next((p["min_accuracy"] for p in pts if p["min_accuracy"] is not None), None)
    ys = [p["accuracy"] for p in pts] + ([min_acc] if min_acc is not None else [])
    sx = Scale(0.0, axis_max([p["latency"] for p in pts], [lat_budget]) * 1.05, left, width - right)
    pad = max((max(ys) - min(ys)) * 0.15, 0.005)
    sy = Scale(max(min(ys) - pad, 0.0), min(max(ys) + pad, 1.0) if max(ys) <= 1.0 else max(ys) + pad,
               height - bottom, top)
    body = [f'<text class="plot-title" x="8" y="14" font-weight="600" fill="#24292f">target {esc(target)}</text>']
    body += _x_axis(sx, height - bottom, top, "p95 latency (ms)") + _y_axis(sy, left, width - right, "accuracy (top-1)")
    if lat_budget is not None:
        x, off = _ref_x(sx, lat_budget)
        body.append(f'<line class="budget" x1="{x:.1f}" y1="{top}" x2="{x:.1f}" y2="{height - bottom}" '
                    f'stroke="{COLORS["fail"]}" stroke-width="2" stroke-dasharray="6,4"/>'
                    f'<text x="{x - 3:.1f}" y="{top - 4}" text-anchor="end" fill="{COLORS["fail"]}" font-size="10">'
                    f'latency budget {lat_budget:g} ms{" (off scale &#9656;)" if off else ""}</text>')
    if min_acc is not None:
        y = sy(min_acc)
        body.append(f'<line class="budget" x1="{left}" y1="{y:.1f}" x2="{width - right}" y2="{y:.1f}" '
                    f'stroke="{COLORS["fail"]}" stroke-width="2" stroke-dasharray="6,4"/>'
                    f'<text x="{width - right - 4}" y="{y - 4:.1f}" text-anchor="end" fill="{COLORS["fail"]}" '
                    f'font-size="10">lowest accuracy within budget</text>')
    front = pareto_front([(p["latency"], p["accuracy"], p["size"]) for p in pts])
    fp = sorted((pts[i] for i in front), key=lambda p: p["latency"])
    if len(fp) > 1:
        d = " ".join(f'{"M" if k == 0 else "L"}{sx(p["latency"]):.1f},{sy(p["accuracy"]):.1f}' for k, p in enumerate(fp))
        body.append(f'<path class="pareto-line" d="{d}" fill="none" stroke="#24292f" stroke-width="1.5" stroke-dasharray="3,2"/>')
    max_size = max(p["size"] for p in pts) or 1.0
    for k, p in enumerate(pts):
        r = 4 + 12 * math.sqrt(p["size"] / max_size)
        color = PALETTE[k % len(PALETTE)]
        x, y = sx(p["latency"]), sy(p["accuracy"])
        on_front = k in front
        body.append(f'<g class="point{" pareto" if on_front else ""}"><circle cx="{x:.1f}" cy="{y:.1f}" r="{r:.1f}" '
                    f'fill="{color}" fill-opacity="0.55" stroke="{color}"/>'
                    + (f'<circle cx="{x:.1f}" cy="{y:.1f}" r="{r + 4:.1f}" fill="none" stroke="#24292f" '
                       f'stroke-width="1.5"/>' if on_front else "")
                    + f'<title>{esc(p["name"])}: p95 {p["latency"]:.4g} ms, accuracy {p["accuracy"]:.4f}, '
                      f'size {p["size"]:.4g} MiB{" (Pareto front)" if on_front else ""}</title></g>')
        body.append(f'<text x="{width - right + 12}" y="{top + 16 + 18 * k}" fill="{color}">&#9679; {esc(p["name"])} '
                    f'({p["size"]:.3g} MiB){" *" if on_front else ""}</text>')
    body.append(f'<text x="{width - right + 12}" y="{top + 24 + 18 * len(pts)}" fill="#57606a" font-size="10">'
                f'* Pareto front (ringed)</text>')
    body.append(f'<text x="{width - right + 12}" y="{top + 38 + 18 * len(pts)}" fill="#57606a" font-size="10">'
                f'area ~ model size</text>')
    return _svg(width, height, "tradeoff", f"Accuracy vs latency vs size, target {target}", body)


def memory_plot(result: "GateResult") -> str:
    rows = [(r["bundle"]["name"], (r.get("memory") or {}).get("peak_rss_mb"),
             ((r.get("target") or {}).get("budget") or {}).get("peak_memory_mb"),
             ((result.baselines[i] or {}).get("memory") or {}).get("peak_rss_mb") if i < len(result.baselines) and result.baselines[i] else None)
            for i, r in enumerate(result.reports)]
    rows = [row for row in rows if row[1] is not None]
    if not rows:
        return '<p class="noplot">No memory figures in these reports.</p>'
    left, right, top, row_h, width = 210, 30, 20, 34, 860
    height = top + row_h * len(rows) + 50
    hi = axis_max([max(v, base or 0) for _, v, _, base in rows], [b for _, _, b, _ in rows])
    sx = Scale(0.0, hi, left, width - right)
    body = _x_axis(sx, top + row_h * len(rows), top - 4, "peak RSS (MiB), max over trials")
    for k, (name, v, budget, base) in enumerate(rows):
        y = top + row_h * k + 7
        color = PALETTE[k % len(PALETTE)]
        body.append(f'<text x="{left - 10}" y="{y + 14}" text-anchor="end" fill="#24292f">{esc(name)}</text>'
                    f'<rect class="bar" x="{left}" y="{y}" width="{max(sx(v) - left, 1):.1f}" height="18" '
                    f'fill="{color}" fill-opacity="0.6"><title>{esc(name)}: {v:.4g} MiB</title></rect>')
        if base is not None:
            body.append(f'<line class="baseline-mark" x1="{sx(base):.1f}" y1="{y - 2}" x2="{sx(base):.1f}" '
                        f'y2="{y + 20}" stroke="#57606a" stroke-width="2"><title>baseline {base:.4g} MiB</title></line>')
        if budget is not None:
            x, off = _ref_x(sx, budget)
            body.append(f'<line class="budget" x1="{x:.1f}" y1="{y - 4}" x2="{x:.1f}" y2="{y + 22}" '
                        f'stroke="{COLORS["fail"]}" stroke-width="2" stroke-dasharray="6,4"/>'
                        + (f'<text x="{x - 4:.1f}" y="{y + 13}" text-anchor="end" fill="{COLORS["fail"]}" '
                           f'font-size="10">budget {budget:g} MiB (off scale &#9656;)</text>' if off else ""))
    body.append(f'<text x="{left}" y="{height - 4}" fill="#57606a" font-size="11">dashed red: budget; grey tick: baseline</text>')
    return _svg(width, height, "memory", "Peak memory per variant", body)


def cosine_plot(result: "GateResult") -> str:
    """Feature extractors: the distribution of per-item cosine similarity between the artifact's and
    the source's embeddings (quality.cosine_histogram), one row of bars per report, with the
    min_cosine_similarity budget (it bounds the mean) and the mean and p5 marked."""
    rows = [(r["bundle"]["name"], r["quality"], ((r.get("target") or {}).get("budget") or {}).get("min_cosine_similarity"))
            for r in result.reports if (r.get("quality") or {}).get("cosine_histogram")]
    if not rows:
        return ""
    left, right, top, row_h, width = 210, 30, 20, 70, 860
    height = top + row_h * len(rows) + 56
    edges = rows[0][1]["cosine_histogram"]["edges"]
    sx = Scale(edges[0], edges[-1], left, width - right)
    body = _x_axis(sx, top + row_h * len(rows), top - 4, "cosine similarity to the source's embedding, per item")
    for k, (name, q, budget) in enumerate(rows):
        hist, base = q["cosine_histogram"], top + row_h * (k + 1) - 8
        peak = max(hist["counts"] + [hist["below"], 1])
        color = PALETTE[k % len(PALETTE)]
        body.append(f'<text x="{left - 10}" y="{base - 20}" text-anchor="end" fill="#24292f">{esc(name)}</text>'
                    f'<text x="{left - 10}" y="{base - 6}" text-anchor="end" fill="#57606a" font-size="11">'
                    f'n={q["n"]}, mean {q["mean_cosine"]:.4f}, p5 {q["p5_cosine"]:.4f}</text>')
        for lo, hi, c in zip(hist["edges"][:-1], hist["edges"][1:], hist["counts"]):
            h = (row_h - 20) * c / peak
            body.append(f'<rect class="bin" x="{sx(lo) + 0.5:.1f}" y="{base - h:.1f}" width="{max(sx(hi) - sx(lo) - 1, 1):.1f}" '
                        f'height="{h:.1f}" fill="{color}" fill-opacity="0.7"><title>{lo:.2f}-{hi:.2f}: {c}</title></rect>')
        if hist["below"]:
            body.append(f'<text class="below" x="{left + 2}" y="{base - 4}" fill="{COLORS["fail"]}" font-size="10">'
                        f'&#9666; {hist["below"]} below {edges[0]:g}</text>')
        for v, cls, dash in ((q["mean_cosine"], "mean", ""), (q["p5_cosine"], "p5", "2,3")):
            x = sx(min(max(v, edges[0]), edges[-1]))
            body.append(f'<line class="{cls}" x1="{x:.1f}" y1="{base - row_h + 22}" x2="{x:.1f}" y2="{base}" '
                        f'stroke="#24292f" stroke-width="1.5" stroke-dasharray="{dash}"><title>{cls} {v:.4f}</title></line>')
        if budget is not None:
            x, _ = _ref_x(sx, budget)
            body.append(f'<line class="budget" x1="{x:.1f}" y1="{base - row_h + 18}" x2="{x:.1f}" y2="{base + 2}" '
                        f'stroke="{COLORS["fail"]}" stroke-width="2" stroke-dasharray="6,4">'
                        f'<title>min_cosine_similarity {budget:g} (bounds the mean)</title></line>')
    body.append(f'<text x="{left}" y="{height - 4}" fill="#57606a" font-size="11">solid: mean; dotted: p5; '
                'dashed red: min_cosine_similarity budget (on the mean)</text>')
    return _svg(width, height, "cosine", "Cosine similarity to the source, per item", body)


CSS = """
body{%s;margin:0;color:#24292f;background:#f6f8fa}
main{max-width:1100px;margin:0 auto;padding:24px}
.verdict{display:flex;align-items:center;gap:18px;padding:18px 22px;border-radius:10px;color:#fff;margin-bottom:18px}
.verdict .big{font-size:34px;font-weight:700;letter-spacing:1px}
.verdict .sub{font-size:15px;opacity:.95}
section{background:#fff;border:1px solid #d0d7de;border-radius:8px;padding:14px 18px;margin:14px 0}
h2{font-size:18px;margin:4px 0 10px}
h3{font-size:15px;margin:14px 0 6px}
table{border-collapse:collapse;width:100%%;font-size:13px}
th,td{border-bottom:1px solid #eaeef2;padding:5px 8px;text-align:left;vertical-align:top}
th{background:#f6f8fa}
td.num{text-align:right;font-variant-numeric:tabular-nums}
.st{display:inline-block;padding:1px 8px;border-radius:10px;color:#fff;font-size:12px;font-weight:600}
.env{color:#57606a;font-size:12px;margin:2px 0 8px}
svg.plot{max-width:100%%;height:auto;display:block;margin:6px 0}
.plots{display:flex;flex-wrap:wrap;gap:10px}
""" % FONT


def generation_plot(result: "GateResult") -> str:
    """Generative bundles: decode tokens/s (x, median) against the relative perplexity increase (y),
    one point per report, one plot per target, with the min_decode_tokens_per_s and
    max_perplexity_increase budgets: the lower right is where a bundle ships."""
    groups: dict[str, list[tuple[str, float, float, dict]]] = {}
    for r in result.reports:
        g = r.get("generation") or {}
        rate, q = (g.get("decode_tokens_per_s") or {}).get("p50"), g.get("quality") or {}
        if rate is None or q.get("perplexity_increase") is None:
            continue
        target = r.get("target") or {}
        groups.setdefault(target.get("name") or "?", []).append(
            (r["bundle"]["name"], float(rate), 100.0 * float(q["perplexity_increase"]), target.get("budget") or {}))
    plots = []
    width, height, left, right, top, bottom = 660, 320, 80, 200, 30, 56
    for target, pts in sorted(groups.items()):
        budget = pts[0][3]
        min_rate, max_ppl = budget.get("min_decode_tokens_per_s"), budget.get("max_perplexity_increase")
        max_ppl = None if max_ppl is None else 100.0 * max_ppl
        sx = Scale(0.0, axis_max([p[1] for p in pts], [min_rate]) * 1.1, left, width - right)
        sy = Scale(min(0.0, min(p[2] for p in pts)), axis_max([p[2] for p in pts], [max_ppl]) * 1.15 or 1.0,
                   height - bottom, top)
        body = [f'<text class="plot-title" x="8" y="14" font-weight="600" fill="#24292f">target {esc(target)}</text>']
        body += _x_axis(sx, height - bottom, top, "decode tokens/s (median)")
        body += _y_axis(sy, left, width - right, "perplexity increase (%)")
        if min_rate is not None:
            x, _ = _ref_x(sx, min_rate)
            body.append(f'<line class="budget" x1="{x:.1f}" y1="{top}" x2="{x:.1f}" y2="{height - bottom}" '
                        f'stroke="{COLORS["fail"]}" stroke-width="2" stroke-dasharray="6,4">'
                        f'<title>min_decode_tokens_per_s {min_rate:g}</title></line>')
        if max_ppl is not None:
            y = sy(max_ppl)
            body.append(f'<line class="budget" x1="{left}" y1="{y:.1f}" x2="{width - right}" y2="{y:.1f}" '
                        f'stroke="{COLORS["fail"]}" stroke-width="2" stroke-dasharray="6,4">'
                        f'<title>max_perplexity_increase {max_ppl:g}%</title></line>')
        for k, (name, rate, ppl, _) in enumerate(pts):
            color = PALETTE[k % len(PALETTE)]
            body.append(f'<g class="point"><circle cx="{sx(rate):.1f}" cy="{sy(ppl):.1f}" r="6" fill="{color}" '
                        f'fill-opacity="0.7" stroke="{color}"/><title>{esc(name)}: {rate:.4g} tokens/s, perplexity '
                        f'{ppl:+.2f}%</title></g>'
                        f'<text x="{width - right + 12}" y="{top + 16 + 18 * k}" fill="{color}">&#9679; {esc(name)}</text>')
        body.append(f'<text x="{left}" y="{height - 4}" fill="#57606a" font-size="11">dashed red: budgets '
                    '(ship: right of the vertical, below the horizontal)</text>')
        plots.append(_svg(width, height, "generation", f"Decode speed vs perplexity, target {target}", body))
    return "".join(plots)


def _status(status: str) -> str:
    return f'<span class="st st-{esc(status)}" style="background:{COLORS.get(status, "#57606a")}">{esc(status.upper())}</span>'


def _report_verdict(checks) -> str:
    from ..checks import verdict_of
    return verdict_of(list(checks))


def to_html(result: "GateResult", title: str = "edgekit gate") -> str:
    from ..checks import format_value
    from .markdown import environment_line

    counts = result.counts()
    summary = ", ".join(f"{n} {s}" for s, n in counts.items() if n)
    color = COLORS.get(result.verdict, "#57606a")
    parts = ["<!DOCTYPE html>", '<html lang="en"><head><meta charset="utf-8">',
             '<meta name="viewport" content="width=device-width,initial-scale=1">',
             f"<title>{esc(title)}: {esc(result.verdict.upper())}</title><style>{CSS}</style></head><body><main>",
             f'<div class="verdict" id="verdict" data-verdict="{esc(result.verdict)}" style="background:{color}">'
             f'<div class="big">{esc(result.verdict.upper())}</div><div class="sub">{esc(title)} · '
             f'{len(result.reports)} report(s) · {esc(summary or "no checks")} · exit code {result.exit_code}'
             + (" (inconclusive: rerun as the details say; CI must not read this as a pass)"
                if result.verdict == "inconclusive" else "") + "</div></div>"]

    # verdict per report at a glance
    parts.append('<section id="summary"><h2>Variants</h2><table><tr><th>bundle</th><th>target</th><th>precision</th>'
                 '<th>device</th><th class="num">p95 ms</th><th class="num">peak MiB</th><th class="num">size MiB</th>'
                 '<th class="num">accuracy</th><th>verdict</th></tr>')
    for i, r in enumerate(result.reports):
        env = r.get("environment") or {}
        lat, mem, acc = r.get("latency") or {}, r.get("memory") or {}, r.get("accuracy") or {}
        parts.append(f"<tr><td>{esc(r['bundle']['name'])}</td><td>{esc((r.get('target') or {}).get('name', '?'))}</td>"
                     f"<td>{esc(r['bundle'].get('precision') or '-')}</td><td>{esc(env.get('cpu_model') or env.get('machine') or '?')}</td>"
                     f'<td class="num">{_f(lat.get("p95"))}</td><td class="num">{_f(mem.get("peak_rss_mb"))}</td>'
                     f'<td class="num">{_f(r.get("model_size_mb"))}</td><td class="num">{_f(acc.get("value"))}</td>'
                     f"<td>{_status(_report_verdict(result.checks_for(i)))}</td></tr>")
    parts.append("</table></section>")

    parts.append(f'<section id="latency"><h2>Latency distribution per variant</h2>{latency_plot(result)}</section>')
    groups = _point_data(result)
    if groups:
        parts.append('<section id="tradeoff"><h2>Accuracy vs latency vs size</h2><div class="plots">')
        parts += [tradeoff_plot(t, pts) for t, pts in sorted(groups.items())]
        parts.append("</div></section>")
    parts.append(f'<section id="memory"><h2>Peak memory</h2>{memory_plot(result)}</section>')
    cos = cosine_plot(result)
    if cos:
        parts.append(f'<section id="cosine"><h2>Embeddings: cosine to the source</h2>{cos}</section>')
    gen = generation_plot(result)
    if gen:
        parts.append(f'<section id="generation"><h2>Generation: decode speed vs perplexity</h2>'
                     f'<div class="plots">{gen}</div></section>')

    parts.append('<section id="checks"><h2>Checks</h2>')
    for i, r in enumerate(result.reports):
        checks = result.checks_for(i)
        src = result.sources[i] if i < len(result.sources) else f"report[{i}]"
        base = result.baseline_sources[i] if i < len(result.baseline_sources) else None
        parts.append(f"<h3>{_status(_report_verdict(checks))} {esc(r['bundle']['name'])} on target "
                     f"{esc((r.get('target') or {}).get('name', '?'))}</h3>"
                     f'<div class="env">{esc(src)}{" · baseline " + esc(base) if base else ""} · '
                     f"{esc(environment_line(r).replace('`', '').replace('**', ''))}</div>")
        parts.append('<table><tr><th>check</th><th class="num">limit</th><th class="num">measured</th>'
                     "<th>statistic</th><th>status</th><th>detail</th></tr>")
        for c in checks:
            parts.append(f'<tr class="check" data-status="{esc(c.status)}"><td>{esc(c.budget)}</td>'
                         f'<td class="num">{esc(format_value(c, "limit"))}</td><td class="num">{esc(format_value(c))}</td>'
                         f"<td>{esc(c.statistic)}</td><td>{_status(c.status)}</td><td>{esc(c.detail)}</td></tr>")
        parts.append("</table>")
    parts.append("</section>")
    parts.append('<p class="env">Rules: edgekit docs/HARNESS_SPEC.md ("Deciding") and docs/TRUST.md. '
                 "Exit codes: 0 pass, 1 fail, 2 bad input, 3 inconclusive.</p>")
    parts.append("</main></body></html>")
    return "\n".join(parts) + "\n"
