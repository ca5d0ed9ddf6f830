"""Search results: the best bundle per target, the Pareto front, the nearest miss, the ledger file
(DIR/search.json) and an HTML page with the front against the budget lines (DIR/search.html)."""

from __future__ import annotations

import html
import json
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any

LEDGER_SCHEMA = "edgekit.search/1"


def _objectives(r: dict) -> tuple[float, float]:
    o = r["objectives"]
    return float(o["latency_p95_ucb_ms"]), float(o["model_size_mb"])


def pareto(rows: list[dict]) -> list[int]:
    """Indices of the measured trials no other measured trial beats on both p95 and size."""
    ok = [r for r in rows if r["status"] == "ok" and "repeat_of" not in r]
    front = []
    for r in ok:
        a = _objectives(r)
        if not any(_objectives(s) != a and all(x <= y for x, y in zip(_objectives(s), a)) for s in ok):
            front.append(r["index"])
    return front


def nearest_miss(rows: list[dict]) -> dict[str, Any]:
    """Per violated budget, the trial closest to meeting it; and the trial with the fewest, smallest
    violations overall (each violation relative to its budget's limit)."""
    ok = [r for r in rows if r["status"] == "ok"]
    per: dict[str, dict] = {}
    for r in ok:
        for k, v in r["constraints"].items():
            if v > 0 and (k not in per or v < per[k]["over_by"]):
                per[k] = {"trial": r["index"], "over_by": v, "value": r["figures"].get(k)}

    def badness(r):
        over = [v / max(abs(r["figures"].get(k, 1.0) - v), 1e-9) for k, v in r["constraints"].items() if v > 0]
        return (len(over), sum(over))
    closest = min(ok, key=badness) if ok else None
    return {"per_budget": per,
            "closest": None if closest is None else {"trial": closest["index"], "params": closest["params"],
                                                     "violated": {k: v for k, v in closest["constraints"].items()
                                                                  if v > 0}}}


def summarize(rows: list[dict], target, out: Path) -> dict[str, Any]:
    feasible = [r for r in rows if r["status"] == "ok" and r["feasible"] and "repeat_of" not in r]
    best = min(feasible, key=lambda r: _objectives(r)) if feasible else None  # fastest, then smallest
    first = min((r["index"] for r in feasible), default=None)
    best_dir = None
    if best is not None:
        best_dir = _copy_best(Path(best["bundle"]), out / "best" / target.name)
    cache = [r.get("cache") for r in rows if r.get("cache")]
    saved = sum(c["seconds_saved"] for c in cache)
    spent = sum(c["seconds_spent"] for c in cache)
    return {"target": target.name, "budget": {k: v for k, v in vars(target.budget).items() if v is not None},
            "trials": rows, "counts": {"trials": len(rows), "measured": sum(r["status"] == "ok" for r in rows),
                                       "feasible": len(feasible), "trials_to_first_feasible": None if first is None
                                       else first + 1},
            "best": None if best is None else {"trial": best["index"], "params": best["params"],
                                               "objectives": best["objectives"], "figures": best["figures"],
                                               "held_out": best.get("held_out"), "bundle": str(best_dir),
                                               "held_out_warning": held_out_warning(best, target)},
            "pareto": pareto(rows), "nearest_miss": None if best is not None else nearest_miss(rows),
            "stage_cache": {"hits": sum(c["hits"] for c in cache), "misses": sum(c["misses"] for c in cache),
                            "seconds_saved": round(saved, 1), "seconds_spent": round(spent, 1),
                            "share_served": round(saved / (saved + spent), 4) if saved + spent else 0.0},
            "wall_s": round(sum(r.get("seconds_total", 0.0) for r in rows), 1)}


def held_out_warning(best: dict, target) -> str | None:
    """The held-out figure never chooses, but a chosen bundle that breaks the drop budget there is
    said out loud: the tuning data were too few, or the stages' early stopping read them too."""
    h, limit = best.get("held_out") or {}, target.budget.max_accuracy_drop
    if limit is None or h.get("value") is None or h.get("source") is None or h.get("metric") != "top1":
        return None
    drop = h["source"] - h["value"]
    if drop <= limit + 1e-9:
        return None
    return (f"the chosen bundle's held-out drop is {100 * drop:.2f} pts ({h.get('n')} items), over the "
            f"{100 * limit:g}-point budget; on the tuning data it was "
            f"{100 * best['figures'].get('accuracy_drop_tuning', float('nan')):.2f} pts: the tuning data are too "
            "few to resolve the budget, or the stages' early stopping read them too")


def _copy_best(src: Path, dest: Path) -> Path:
    """An ordinary bundle folder: copied beside, then renamed into place (never half-written)."""
    dest.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=".tmp-", dir=dest.parent))
    shutil.copytree(src, tmp / "b")
    if dest.exists():
        shutil.rmtree(dest)
    os.rename(tmp / "b", dest)
    shutil.rmtree(tmp, ignore_errors=True)
    return dest


def write(out: Path, results: dict[str, dict], settings: dict) -> Path:
    doc = {"schema": LEDGER_SCHEMA, "settings": settings, "targets": results}
    path = out / "search.json"
    tmp = path.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(doc, indent=1, default=str) + "\n", encoding="utf-8")
    os.replace(tmp, path)
    page = out / "search.html"
    page.with_suffix(".tmp").write_text(render_html(doc), encoding="utf-8")
    os.replace(page.with_suffix(".tmp"), page)
    return path


def comparable(doc: dict) -> dict:
    """The ledger without what a rerun measures differently (timings, paths): what a resumed search
    must reproduce (trial settings, order, status, size, accuracy, feasibility verdicts on them)."""
    keep = {}
    for name, t in doc["targets"].items():
        keep[name] = [{"index": r["index"], "params": r["params"], "status": r["status"],
                       "size_mb": round(r["objectives"]["model_size_mb"], 4) if r.get("objectives") else None,
                       "accuracy_drop_tuning": r.get("figures", {}).get("accuracy_drop_tuning")}
                      for r in t["trials"]]
    return keep


def render_html(doc: dict) -> str:
    parts = ["<!doctype html><meta charset='utf-8'><title>edgekit search</title>",
             "<style>body{font:14px system-ui,sans-serif;margin:2em}table{border-collapse:collapse}"
             "td,th{border:1px solid #ccc;padding:3px 6px}.ok{color:#080}.bad{color:#b00}</style>",
             "<h1>edgekit search</h1>"]
    for name, t in doc["targets"].items():
        parts.append(f"<h2>{html.escape(name)}</h2>")
        b = t["best"]
        parts.append("<p>" + (f"Best: trial {b['trial']} ({html.escape(json.dumps(b['params']))}), p95 UCB "
                              f"{b['objectives']['latency_p95_ucb_ms']:.2f} ms, {b['objectives']['model_size_mb']:.2f} MB."
                              if b else "<b class='bad'>No trial met every budget.</b> Nearest miss: "
                              + html.escape(json.dumps(t["nearest_miss"], default=str))) + "</p>")
        parts.append(_svg(t))
        parts.append("<table><tr><th>#</th><th>settings</th><th>status</th><th>p95 UCB ms</th><th>MB</th>"
                     "<th>drop (tuning)</th><th>violated</th></tr>")
        for r in t["trials"]:
            o = r.get("objectives") or {}
            viol = ", ".join(k for k, v in (r.get("constraints") or {}).items() if v > 0)
            cls = "ok" if r["status"] == "ok" and r.get("feasible") else "bad"
            parts.append(f"<tr><td>{r['index']}</td><td>{html.escape(json.dumps(r['params']))}</td>"
                         f"<td class='{cls}'>{html.escape(r['status'] + ('' if r['status'] != 'ok' else (' feasible' if r['feasible'] else ' infeasible')))}</td>"
                         f"<td>{o.get('latency_p95_ucb_ms', float('nan')):.2f}</td><td>{o.get('model_size_mb', float('nan')):.2f}</td>"
                         f"<td>{(r.get('figures') or {}).get('accuracy_drop_tuning', float('nan')):.4f}</td>"
                         f"<td>{html.escape(viol or r.get('error', ''))}</td></tr>")
        parts.append("</table>")
    return "\n".join(parts) + "\n"


def _svg(t: dict, w: int = 560, h: int = 360, pad: int = 50) -> str:
    """Every measured trial at (p95 UCB, size); the front joined; budget lines dashed."""
    pts = [(r["index"], *_objectives(r), r["feasible"]) for r in t["trials"] if r["status"] == "ok"]
    if not pts:
        return "<p>No trial was measured.</p>"
    lat_b, size_b = t["budget"].get("latency_p95_ms"), t["budget"].get("model_size_mb")
    xs = [p[1] for p in pts] + ([lat_b] if lat_b else [])
    ys = [p[2] for p in pts] + ([size_b] if size_b else [])
    x0, x1 = 0.0, max(xs) * 1.1 or 1.0
    y0, y1 = 0.0, max(ys) * 1.1 or 1.0

    def X(v): return pad + (v - x0) / (x1 - x0) * (w - 2 * pad)

    def Y(v): return h - pad - (v - y0) / (y1 - y0) * (h - 2 * pad)
    s = [f"<svg width='{w}' height='{h}' xmlns='http://www.w3.org/2000/svg' style='border:1px solid #ddd'>",
         f"<text x='{w / 2}' y='{h - 10}' text-anchor='middle'>p95 upper bound (ms)</text>",
         f"<text x='14' y='{h / 2}' transform='rotate(-90 14 {h / 2})' text-anchor='middle'>model size (MB)</text>",
         f"<line x1='{pad}' y1='{h - pad}' x2='{w - pad}' y2='{h - pad}' stroke='#888'/>",
         f"<line x1='{pad}' y1='{pad}' x2='{pad}' y2='{h - pad}' stroke='#888'/>"]
    for v in (x1 / 2, x1 / 1.1):
        s.append(f"<text x='{X(v):.0f}' y='{h - pad + 15}' text-anchor='middle' font-size='11'>{v:.3g}</text>")
    for v in (y1 / 2, y1 / 1.1):
        s.append(f"<text x='{pad - 4}' y='{Y(v):.0f}' text-anchor='end' font-size='11'>{v:.3g}</text>")
    if lat_b:
        s.append(f"<line x1='{X(lat_b):.1f}' y1='{pad}' x2='{X(lat_b):.1f}' y2='{h - pad}' stroke='#c60' "
                 f"stroke-dasharray='5,4'/><text x='{X(lat_b) + 3:.1f}' y='{pad + 10}' font-size='11' fill='#c60'>"
                 f"p95 budget {lat_b:g} ms</text>")
    if size_b:
        s.append(f"<line x1='{pad}' y1='{Y(size_b):.1f}' x2='{w - pad}' y2='{Y(size_b):.1f}' stroke='#c60' "
                 f"stroke-dasharray='5,4'/><text x='{w - pad}' y='{Y(size_b) - 4:.1f}' font-size='11' fill='#c60' "
                 f"text-anchor='end'>size budget {size_b:g} MB</text>")
    front = sorted((p for p in pts if p[0] in t["pareto"]), key=lambda p: p[1])
    if len(front) > 1:
        s.append("<polyline fill='none' stroke='#36c' points='" + " ".join(f"{X(p[1]):.1f},{Y(p[2]):.1f}" for p in front)
                 + "'/>")
    best = (t["best"] or {}).get("trial")
    for i, x, y, ok in pts:
        color = "#080" if ok else "#b00"
        r = 7 if i == best else 4
        s.append(f"<circle cx='{X(x):.1f}' cy='{Y(y):.1f}' r='{r}' fill='{color}' fill-opacity='0.7'>"
                 f"<title>trial {i}: {x:.2f} ms, {y:.2f} MB</title></circle>")
    s.append("</svg>")
    return "".join(s)

