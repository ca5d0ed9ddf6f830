"""The HTML gate report: self-contained, escaped, deterministic, and its plots render in Chromium."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import tempfile
from pathlib import Path

import pytest

from edgekit.gate import gate
from edgekit.report.html import axis_max, nice_ticks, pareto_front, to_html
from test_gate_baseline import BASE, report
from ektest import run_cli

CHROMIUM = next((p for p in (shutil.which("chromium"), shutil.which("chromium-browser"), "/usr/bin/chromium")
                 if p and Path(p).exists()), None)
needs_chromium = pytest.mark.skipif(CHROMIUM is None, reason="chromium is not installed (apt-get install -y chromium): "
                                                             "the HTML report is not rendered")


def variants(baseline: bool = False):
    a = report([m * 1.2 for m in BASE])
    a["accuracy"]["value"] = 0.96
    b = report(BASE, bundle="x86-avx2-fp32", size=2.0)
    b["accuracy"]["value"] = 0.975
    c = report([m * 0.8 for m in BASE], target="x86-vnni", size=0.4)
    if baseline:
        return gate([a, b], baseline=[report(BASE), report(BASE, bundle="x86-avx2-fp32", size=2.0)])
    return gate([a, b, c])


# ---------------------------------------------------------------- without a browser

def test_page_has_every_plot_and_the_verdict():
    page = to_html(variants(baseline=True))
    assert page.startswith("<!DOCTYPE html>")
    assert 'data-verdict="fail"' in page and ">FAIL<" in page
    for kind in ("latency", "tradeoff", "memory"):
        assert f'data-plot="{kind}"' in page
    assert page.count('class="baseline-box"') == 2 and 'class="budget"' in page
    assert "latency_regression" in page and "exit code 1" in page


def test_one_tradeoff_plot_per_target_with_the_pareto_front():
    page = to_html(variants())
    assert page.count('data-plot="tradeoff"') == 2                 # x86-avx2 and x86-vnni
    assert page.count('class="point pareto"') == 3                  # fp32: faster+more accurate, int8: smaller


def test_self_contained_and_escaped():
    r = report(BASE, bundle="<script>alert(1)</script>")
    page = to_html(gate([r]))
    assert "<script" not in page
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in page
    stripped = page.replace('xmlns="http://www.w3.org/2000/svg"', "")
    assert not re.search(r"(src=|href=|@import|url\(|https?://)", stripped)


def test_deterministic():
    assert to_html(variants()) == to_html(variants())


def test_inconclusive_banner():
    page = to_html(gate([report([1.0, 1.1])], baseline=report([1.0, 1.1])))
    assert 'data-verdict="inconclusive"' in page and "must not read this as a pass" in page


def test_report_without_samples_or_accuracy_still_renders():
    r = report(BASE)
    del r["latency"]["samples_ms"]
    r["accuracy"] = None
    page = to_html(gate([r]))
    assert 'data-plot="latency"' in page and 'data-plot="tradeoff"' not in page


def test_pareto_front_and_axes():
    pts = [(1.0, 0.9, 1.0), (2.0, 0.95, 1.0), (2.0, 0.9, 1.0), (0.5, 0.8, 5.0), (3.0, 0.95, 0.5)]
    assert pareto_front(pts) == [0, 1, 3, 4]                          # (2.0, 0.9) is dominated by (1.0, 0.9)
    assert nice_ticks(0, 1.0) == [0, 0.2, 0.4, 0.6, 0.8, 1.0]
    assert axis_max([1.0], [50.0]) == pytest.approx(1.08)              # a far budget is drawn off scale
    assert axis_max([1.0], [2.0]) == pytest.approx(2.16)


def test_cli_writes_html(tmp_path):
    p = tmp_path / "r.json"
    p.write_text(json.dumps(report(BASE)))
    proc = run_cli("gate", p, "--html", tmp_path / "gate.html")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert 'data-plot="latency"' in (tmp_path / "gate.html").read_text()


# ---------------------------------------------------------------- rendered by Chromium

PROBE = """<script>
const out = {plots: [], banner: null};
document.querySelectorAll('svg.plot').forEach(svg => {
  const r = svg.getBoundingClientRect();
  const marks = {};
  for (const cls of ['box', 'median', 'ucb', 'p95', 'trial-median', 'budget', 'point', 'pareto', 'pareto-line', 'bar', 'baseline-box', 'axis']) {
    marks[cls] = Array.from(svg.querySelectorAll('.' + cls)).filter(e => {
      const b = e.getBBox(); return b.width > 0 || b.height > 0; }).length;
  }
  out.plots.push({kind: svg.dataset.plot, width: r.width, height: r.height, marks: marks});
});
const v = document.getElementById('verdict').getBoundingClientRect();
out.banner = {width: v.width, height: v.height, color: getComputedStyle(document.getElementById('verdict')).backgroundColor};
document.body.setAttribute('data-rendered', JSON.stringify(out));
</script>"""


def render(page: str, tmp_path: Path) -> dict:
    """Load the page in headless Chromium with a probe appended (the report itself has no script)
    and read back what the browser laid out."""
    f = tmp_path / "probe.html"
    f.write_text(page.replace("</body>", PROBE + "</body>"), encoding="utf-8")
    with tempfile.TemporaryDirectory() as profile:
        proc = subprocess.run([CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                               "--disable-component-update", "--disable-sync", "--no-first-run",
                               f"--user-data-dir={profile}", "--window-size=1200,2000", "--dump-dom", f.as_uri()],
                              capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr[-2000:]
    m = re.search(r'data-rendered="([^"]*)"', proc.stdout)
    assert m, "the probe did not run: " + proc.stdout[:500]
    import html
    return json.loads(html.unescape(m.group(1)))


@needs_chromium
def test_plots_render_in_chromium(tmp_path):
    out = render(to_html(variants(baseline=True)), tmp_path)
    kinds = [p["kind"] for p in out["plots"]]
    assert kinds == ["latency", "tradeoff", "memory"]
    for p in out["plots"]:
        assert p["width"] > 300 and p["height"] > 100, p
        assert p["marks"]["axis"] >= 1 and p["marks"]["budget"] >= 1, p
    lat, trade, mem = out["plots"]
    assert lat["marks"]["box"] == 4 and lat["marks"]["median"] == 4 and lat["marks"]["ucb"] == 4   # 2 variants + 2 baselines
    assert lat["marks"]["trial-median"] == 24 and lat["marks"]["baseline-box"] == 2
    assert trade["marks"]["point"] == 2 and trade["marks"]["pareto"] == 2 and trade["marks"]["pareto-line"] == 1
    assert mem["marks"]["bar"] == 2
    assert out["banner"]["height"] > 40 and out["banner"]["color"] == "rgb(207, 34, 46)"   # red: fail


@needs_chromium
def test_cli_html_renders_in_chromium(tmp_path):
    reports = []
    for i, r in enumerate((report(BASE), report(BASE, target="x86-vnni"))):
        p = tmp_path / f"r{i}.json"
        p.write_text(json.dumps(r))
        reports.append(p)
    proc = run_cli("gate", *reports, "--html", tmp_path / "gate.html")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    out = render((tmp_path / "gate.html").read_text(), tmp_path)
    assert [p["kind"] for p in out["plots"]] == ["latency", "tradeoff", "tradeoff", "memory"]
    assert out["banner"]["color"] == "rgb(26, 127, 55)"                                        # green: pass
