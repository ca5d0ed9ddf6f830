"""report.json loading/validation and the Markdown / JUnit renderings of a gate result."""

from __future__ import annotations

import json
import xml.etree.ElementTree as ET

import pytest

from edgekit.errors import ReportError
from edgekit.gate import gate
from edgekit.report import SCHEMA, load_report, report_schema, to_junit, to_markdown, validate_report
from test_gate import BUDGET, make_report


def write(tmp_path, data, name="report.json"):
    path = tmp_path / name
    path.write_text(data if isinstance(data, str) else json.dumps(data, indent=1), encoding="utf-8")
    return path


# ---------------------------------------------------------------- load_report

def test_load_valid_report(tmp_path):
    report = make_report()
    assert load_report(write(tmp_path, report)) == report


def test_schema_file_is_json_schema_for_this_version():
    schema = report_schema()
    assert schema["properties"]["schema"]["enum"] == [SCHEMA]
    assert {"latency", "memory", "self_check", "environment"} <= set(schema["required"])


def test_not_json(tmp_path):
    path = write(tmp_path, "this is not json", "bench.json")
    with pytest.raises(ReportError, match=r"bench\.json: not JSON"):
        load_report(path)


def test_truncated_json(tmp_path):
    text = json.dumps(make_report(), indent=1)
    path = write(tmp_path, text[: len(text) // 2], "cut.json")
    with pytest.raises(ReportError) as info:
        load_report(path)
    msg = str(info.value)
    assert "cut.json" in msg and "not JSON" in msg and "truncated" in msg and "\n" not in msg


def test_empty_and_missing_files(tmp_path):
    with pytest.raises(ReportError, match=r"empty\.json: not JSON \(the file is empty\)"):
        load_report(write(tmp_path, "", "empty.json"))
    with pytest.raises(ReportError, match=r"nope\.json: no such report file"):
        load_report(tmp_path / "nope.json")


@pytest.mark.parametrize("schema, words", [
    ("edgekit.manifest/1", "schema is \"edgekit.manifest/1\"; expected 'edgekit.report/1'"),
    ("edgekit.report/2", "schema is \"edgekit.report/2\""),
])
def test_wrong_schema(tmp_path, schema, words):
    report = make_report()
    report["schema"] = schema
    with pytest.raises(ReportError) as info:
        load_report(write(tmp_path, report, "r1.json"))
    assert str(info.value).startswith(f"{tmp_path / 'r1.json'}: not an edgekit report (")
    assert words in str(info.value)


def test_missing_schema(tmp_path):
    report = make_report()
    del report["schema"]
    with pytest.raises(ReportError, match=r"report\.json: not an edgekit report \(missing key 'schema'"):
        load_report(write(tmp_path, report))


def test_not_an_object(tmp_path):
    with pytest.raises(ReportError, match=r"list\.json: not an edgekit report \(a JSON list"):
        load_report(write(tmp_path, "[1, 2]", "list.json"))


def test_missing_key_names_file_and_key(tmp_path):
    report = make_report()
    del report["latency"]
    path = write(tmp_path, report)
    with pytest.raises(ReportError) as info:
        load_report(path)
    assert str(info.value) == f"{path}: not an edgekit report (missing key 'latency')"


def test_missing_nested_key(tmp_path):
    report = make_report()
    del report["environment"]["emulated"]
    with pytest.raises(ReportError, match=r"missing key 'environment\.emulated'"):
        load_report(write(tmp_path, report))


@pytest.mark.parametrize("mutate, words", [
    (lambda r: r["memory"].update(peak_rss_mb="big"), 'memory.peak_rss_mb is "big"; expected number'),
    (lambda r: r["self_check"].update(passed="yes"), "self_check.passed is \"yes\"; expected boolean"),
    (lambda r: r["environment"].update(stand_in=1), "environment.stand_in is 1; expected boolean"),
    (lambda r: r["latency"].update(p95=True), "latency.p95 is true; expected number"),
    (lambda r: r["latency"]["samples_ms"][1].__setitem__(3, None), "latency.samples_ms[1][3] is null"),
    (lambda r: r["environment"].update(runtime="onnxruntime"), 'environment.runtime is "onnxruntime"; expected object'),
    (lambda r: r["latency"].update(unit="s"), 'latency.unit is "s"; expected one of "ms"'),
    (lambda r: r.update(accuracy=[0.9]), "accuracy is list; expected object or null"),
])
def test_wrong_types(tmp_path, mutate, words):
    report = make_report()
    mutate(report)
    with pytest.raises(ReportError) as info:
        load_report(write(tmp_path, report, "typed.json"))
    msg = str(info.value)
    assert msg.startswith(f"{tmp_path / 'typed.json'}: not an edgekit report (")
    assert words in msg and "\n" not in msg


# ---------------------------------------------------------------- figures you can trust

# (path into the report, bad value, the words of the one-line error). Each is a figure the harness
# measures; the same list drives the schema/loader agreement test below.
BAD_FIGURES = [
    (("latency", "p95"), -3.0, "latency.p95 is -3.0; must be >= 0"),
    (("latency", "samples_ms", 0, 5), -0.5, "latency.samples_ms[0][5] is -0.5; must be >= 0"),
    (("latency", "trial_medians", 1), -1.0, "latency.trial_medians[1] is -1.0; must be >= 0"),
    (("latency", "n"), -1, "latency.n is -1; must be >= 0"),
    (("memory", "peak_rss_mb"), -210.0, "memory.peak_rss_mb is -210.0; must be >= 0"),
    (("memory", "inference_peak_rss_mb", 2), -1.0, "memory.inference_peak_rss_mb[2] is -1.0; must be >= 0"),
    (("model_size_mb",), -1, "model_size_mb is -1; must be >= 0"),
    (("cold_start", "load_ms", 0), -1.0, "cold_start.load_ms[0] is -1.0; must be >= 0"),
    (("cold_start", "import_ms", 2), -49.0, "cold_start.import_ms[2] is -49.0; must be >= 0"),
    (("self_check", "max_abs_diff"), -0.1, "self_check.max_abs_diff is -0.1; must be >= 0"),
    (("self_check", "n"), -16, "self_check.n is -16; must be >= 0"),
    (("accuracy", "value"), 1.5, "accuracy.value is 1.5; must be <= 1"),
    (("accuracy", "value"), -0.1, "accuracy.value is -0.1; must be >= 0"),
    (("accuracy", "source_value"), 97.5, "accuracy.source_value is 97.5; must be <= 1"),
    (("accuracy", "drop"), -2.0, "accuracy.drop is -2.0; must be >= -1"),
    (("bundle", "integrity", "n_files"), -5, "bundle.integrity.n_files is -5; must be >= 0"),
    (("trials", 0, "runs"), -300, "trials[0].runs is -300; must be >= 0"),
    (("trials", 1, "timed_seconds"), -10.0, "trials[1].timed_seconds is -10.0; must be >= 0"),
    (("harness", "duration_s"), -1.0, "harness.duration_s is -1.0; must be >= 0"),
]


def full_report():
    """make_report plus the harness and trials sections a real harness writes."""
    report = make_report()
    report["harness"] = {"version": "1", "started_unix": 1.7e9, "duration_s": 40.0}
    report["trials"] = [{"pid": 100 + i, "warmup_runs": 10, "runs": 300, "timed_seconds": 10.0, "capped": False,
                         "pinned_cpus": [0]} for i in range(3)]
    return report


def _set(report, path, value):
    node = report
    for key in path[:-1]:
        node = node[key]
    node[path[-1]] = value


def _schema_at(schema, path):
    """The sub-schema that governs report[path...] (properties by name, items for list indexes)."""
    node = schema
    for key in path:
        node = node["items"] if isinstance(key, int) else node["properties"][key]
    return node


@pytest.mark.parametrize("path, value, words", BAD_FIGURES, ids=[w.split(" is ")[0] for _, _, w in BAD_FIGURES])
def test_out_of_range_figures_are_refused_naming_file_key_and_bound(tmp_path, path, value, words):
    report = full_report()
    _set(report, path, value)
    p = write(tmp_path, report, "r.json")
    with pytest.raises(ReportError) as info:
        load_report(p)
    assert str(info.value) == f"{p}: {words}"


@pytest.mark.parametrize("literal", ["NaN", "Infinity", "-Infinity", "1e999"])
def test_nan_and_infinity_are_refused_naming_the_key(tmp_path, literal):
    # json.dumps writes NaN/Infinity literals (not JSON), and json.loads would read them back silently.
    text = json.dumps(make_report(), indent=1).replace('"peak_rss_mb": 210.0', f'"peak_rss_mb": {literal}')
    assert literal in text
    p = write(tmp_path, text, "nan.json")
    with pytest.raises(ReportError) as info:
        load_report(p)
    shown = {"1e999": "Infinity"}.get(literal, literal)
    assert str(info.value).startswith(f"{p}: memory.peak_rss_mb is {shown}; must be a finite number")


def test_nan_anywhere_is_refused_even_outside_the_schema():
    report = make_report()
    report["robustness"] = {"noise": {"levels": [{"sigma_rel": 0.01, "extra": [1.0, float("nan")]}]}}
    with pytest.raises(ReportError, match=r"^r: robustness\.noise\.levels\[0\]\.extra\[1\] is NaN; must be a finite"):
        validate_report(report, "r")
    report = make_report()
    report["latency"]["samples_ms"][2][7] = float("-inf")
    with pytest.raises(ReportError, match=r"latency\.samples_ms\[2\]\[7\] is -Infinity"):
        gate([report])


def test_negative_figures_where_negative_is_meaningful_are_accepted():
    report = make_report()
    report["accuracy"]["drop"] = -0.01              # the artifact scored higher than the source
    report["memory"]["model_share_mb"] = -0.3       # a difference of two RSS readings
    report["environment"]["temperature_c"] = -12.0  # a cold device
    assert validate_report(report) is report


def test_schema_and_loader_agree_on_bad_figures():
    """Every bad figure the loader refuses is refused by the schema file itself: with jsonschema
    where it is installed, else by the minimum / maximum the schema declares at that key."""
    schema = report_schema()
    try:
        import jsonschema
    except ImportError:
        jsonschema = None
    assert validate_report(full_report())
    if jsonschema is not None:
        jsonschema.validate(full_report(), schema)
    for path, value, _ in BAD_FIGURES:
        report = full_report()
        _set(report, path, value)
        with pytest.raises(ReportError):
            validate_report(report)
        if jsonschema is not None:
            with pytest.raises(jsonschema.ValidationError):
                jsonschema.validate(report, schema)
        # the bound the loader applied is the one the schema file states at that key
        sub = _schema_at(schema, path)
        assert ("minimum" in sub and value < sub["minimum"]) or ("maximum" in sub and value > sub["maximum"]), \
            (path, value, sub)
    # Every measured figure of a real report carries a bound in the schema (no figure left unchecked).
    for path in [("latency", "p95"), ("latency", "samples_ms", 0, 0), ("memory", "peak_rss_mb"),
                 ("memory", "baseline_rss_mb", 0), ("model_size_mb",), ("cold_start", "load_ms", 0),
                 ("cold_start", "first_inference_ms", 0), ("accuracy", "value"), ("self_check", "max_abs_diff"),
                 ("settings", "runs"), ("trials", 0, "timed_seconds"), ("harness", "duration_s")]:
        assert "minimum" in _schema_at(schema, path), path
    assert _schema_at(schema, ("accuracy", "value"))["maximum"] == 1


def test_skipped_accuracy_report_is_valid_and_the_drop_budget_is_skipped():
    report = make_report()
    report["accuracy"] = {"metric": "top1", "n": 0, "value": None, "source_value": 0.975, "drop": None,
                          "skipped": True, "reason": "--skip-accuracy"}
    check = next(c for c in gate([report]).checks if c.budget == "max_accuracy_drop")
    assert check.status == "skip" and "--skip-accuracy" in check.detail


def test_cli_refuses_nan_and_negative_reports_in_one_line(tmp_path, capsys):
    from edgekit.cli import main
    nan = write(tmp_path, json.dumps(make_report()).replace('"p95": ', '"p95": NaN, "_p95": '), "nan.json")
    neg = make_report()
    neg["latency"]["p95"] = -3.0
    neg = write(tmp_path, neg, "neg.json")
    for path, words in ((nan, "latency.p95 is NaN"), (neg, "latency.p95 is -3.0; must be >= 0")):
        assert main(["gate", str(path)]) == 2
        lines = capsys.readouterr().err.strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith(f"edgekit: error: {path}: {words}"), lines


def test_optional_parts_may_be_absent_or_null():
    report = make_report()
    for key in ("settings", "accuracy"):
        del report[key]
    del report["latency"]["samples_ms"]
    report["environment"]["cpu_model"] = None
    report["memory"]["anon_mb"] = None
    assert validate_report(report) is report


def test_gate_validates_dicts_too():
    report = make_report()
    del report["memory"]
    with pytest.raises(ReportError, match=r"report\[0\]: not an edgekit report \(missing key 'memory'\)"):
        gate([report])


# ---------------------------------------------------------------- markdown

def failing_result():
    good = make_report()
    bad = make_report(samples=[[1.0] * 95 + [10.0] * 5], stand_in=True, requested_device="NPU")
    bad["bundle"]["name"] = "x86-avx2-fp32"
    bad["memory"]["peak_rss_mb"] = 250.0  # passes, but on a stand-in: warn
    bad["accuracy"] = None                # skipped
    return gate([good, bad])


def test_markdown_pass_verdict_and_budgets():
    md = to_markdown(gate([make_report()]))
    assert md.splitlines()[0] == "## ✅ PASS edgekit gate"
    for budget in (*BUDGET, "self_check", "integrity"):
        assert f"| {budget} |" in md
    assert "| budget | limit | measured | statistic | status |" in md
    assert "Environment: `Test CPU @ 3GHz` · onnxruntime 1.32.0 · 2 threads" in md
    assert "| latency_p95_ms | 5 ms |" in md and "| peak_memory_mb | 300 MiB | 210 MiB |" in md


def test_markdown_fail_one_table_per_report():
    md = to_markdown(failing_result())
    assert md.splitlines()[0] == "## ❌ FAIL edgekit gate"
    assert md.count("| budget | limit | measured | statistic | status |") == 2
    assert "`x86-avx2-fp32`" in md and "**stand-in** for NPU" in md
    assert "❌ fail" in md and "⚠️ warn" in md and "⏭️ skip" in md
    assert "requested device absent" in md
    # table rows stay intact: no raw pipe or newline from a detail leaks into a cell
    for line in md.splitlines():
        if line.startswith("| "):
            assert line.count(" | ") == 4, line


# ---------------------------------------------------------------- junit

def test_junit_parses_and_counts():
    result = failing_result()
    root = ET.fromstring(to_junit(result))
    assert root.tag == "testsuites"
    suites = root.findall("testsuite")
    assert [s.get("name") for s in suites] == ["x86-avx2", "x86-avx2-fp32"]
    for suite, index in zip(suites, range(2)):
        checks = result.checks_for(index)
        cases = suite.findall("testcase")
        assert int(suite.get("tests")) == len(cases) == len(checks)
        assert int(suite.get("failures")) == sum(c.status == "fail" for c in checks) == len(
            [c for c in cases if c.find("failure") is not None])
        assert int(suite.get("skipped")) == sum(c.status == "skip" for c in checks) == len(
            [c for c in cases if c.find("skipped") is not None])
        assert all(c.get("classname") == "edgekit.x86-avx2" for c in cases)
    good, bad = suites
    assert good.get("failures") == "0" and good.get("skipped") == "0"
    bad_cases = {c.get("name"): c for c in bad.findall("testcase")}
    assert bad.get("failures") == "1"
    failure = bad_cases["latency_p95_ms"].find("failure")
    assert "10 ms" in failure.get("message") and "limit 5 ms" in failure.get("message")
    assert bad_cases["max_accuracy_drop"].find("skipped") is not None
    warn = bad_cases["peak_memory_mb"]
    assert warn.find("failure") is None and warn.find("skipped") is None
    assert "stand-in" in warn.find("system-out").text
    assert root.get("tests") == str(len(result.checks)) and root.get("failures") == "1"
    assert root.get("skipped") == "1"


def test_junit_all_pass():
    root = ET.fromstring(to_junit(gate([make_report()])))
    assert root.get("failures") == "0" and root.find("testsuite/testcase/failure") is None
