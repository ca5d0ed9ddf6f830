"""Gate policy: licence allow-list and required provenance; "unknown" fails."""

from __future__ import annotations

import json

import pytest

from edgekit.errors import ConfigError
from edgekit.gate import gate
from edgekit.trust.policy import license_allowed, load_policy
from ektest import assert_one_line_error, run_cli
from test_gate_baseline import BASE, report

POLICY = """
[license]
allow = ["MIT", "Apache-2.0"]
[provenance]
require_known = true
require_data_hashes = true
"""


def with_prov(**prov) -> dict:
    r = report(BASE)
    r["provenance"] = {"license": "MIT", "provenance": "fine-tuned from X on Y",
                       "data_sha256": {"calibration": "a" * 64, "validation": "b" * 64}, **prov}
    return r


def checks(result) -> dict:
    return {c.budget: c for c in result.checks}


@pytest.fixture
def policy_file(tmp_path):
    p = tmp_path / "policy.toml"
    p.write_text(POLICY)
    return p


def test_known_licence_and_provenance_pass(policy_file):
    r = gate([with_prov()], policy=policy_file)
    c = checks(r)
    assert c["license"].status == c["provenance"].status == c["data_provenance"].status == "pass"
    assert r.exit_code == 0


@pytest.mark.parametrize("prov, failing", [
    ({"license": "unknown"}, "license"),
    ({"license": "GPL-3.0-only"}, "license"),
    ({"provenance": "unknown"}, "provenance"),
    ({"provenance": "  "}, "provenance"),
    ({"data_sha256": {"calibration": "a" * 64}}, "data_provenance"),
])
def test_unknown_or_disallowed_fails(policy_file, prov, failing):
    r = gate([with_prov(**prov)], policy=policy_file)
    assert checks(r)[failing].status == "fail" and r.exit_code == 1


def test_report_without_provenance_fails_as_unknown(policy_file):
    r = gate([report(BASE)], policy=policy_file)
    c = checks(r)["license"]
    assert c.status == "fail" and c.value == "unknown" and "older harness" in c.detail


def test_spdx_expressions():
    assert license_allowed("MIT OR GPL-3.0-only", ["MIT"])
    assert not license_allowed("MIT AND GPL-3.0-only", ["MIT"])
    assert license_allowed("(Apache-2.0 AND MIT)", ["mit", "apache-2.0"])
    assert not license_allowed("unknown", ["unknown"])


def test_signature_and_commit_requirements():
    pol = load_policy({"signature": {"require": True}, "provenance": {"require_source_commit": True}})
    r = with_prov(source_commit="0123abcd" * 5)
    r["bundle"]["signature"] = {"checked": True, "verified": True, "key_id": "abcd"}
    assert {c.status for c in gate([r], policy=pol).checks if c.budget in ("signature", "source_commit")} == {"pass"}
    r["bundle"]["signature"] = {"checked": False}
    r["provenance"]["source_commit"] = None
    assert {c.budget for c in gate([r], policy=pol).checks if c.status == "fail"} == {"signature", "source_commit"}


@pytest.mark.parametrize("text, needle", [
    ("[licence]\nallow = []", "unknown section [licence]"),
    ("[license]\nallowed = []", "unknown key 'license.allowed'"),
    ("[provenance]\nrequire_known = 1", "'provenance.require_known' = 1"),
    ("[license]\nallow = [1]", "list of SPDX id strings"),
    ("[license\n", "not valid TOML"),
])
def test_bad_policy_files(tmp_path, text, needle):
    p = tmp_path / "p.toml"
    p.write_text(text)
    with pytest.raises(ConfigError, match=needle.replace("[", r"\[").replace("]", r"\]")):
        load_policy(p)


def test_cli(tmp_path, policy_file):
    good, bad = tmp_path / "good.json", tmp_path / "bad.json"
    good.write_text(json.dumps(with_prov()))
    bad.write_text(json.dumps(with_prov(license="unknown")))
    assert run_cli("gate", good, "--policy", policy_file).returncode == 0
    proc = run_cli("gate", bad, "--policy", policy_file)
    assert proc.returncode == 1 and "license" in proc.stdout
    assert_one_line_error(run_cli("gate", good, "--policy", tmp_path / "none.toml"), "policy file not found")
