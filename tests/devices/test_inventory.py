"""devices.toml: parsing, validation (every error names the file, the device and the key),
`edgekit devices` and `edgekit devices --check` on this machine."""

from __future__ import annotations

import json
import sys

import pytest

from devtest import write_devices
from edgekit.devices.inventory import load_devices, select
from edgekit.errors import ConfigError
from ektest import assert_one_line_error, run_cli

ISSUE_EXAMPLE = """
[[device]]
name = "pi-lab-1"
transport = "ssh"
target = "rpi4"
host = "pi-lab-1.local"
user = "pi"
port = 22
identity = "~/.ssh/id_ed25519"
python = "/usr/bin/python3"
workdir = "/tmp/edgekit"
labels = ["lab"]

[[device]]
name = "arm-emulated"
transport = "qemu"
target = "rpi4"
"""


def test_the_issue_example_parses(tmp_path):
    f = tmp_path / "devices.toml"
    f.write_text(ISSUE_EXAMPLE)
    pi, arm = load_devices(f)
    assert (pi.name, pi.transport, pi.profile.name, pi.host, pi.user, pi.port) == \
        ("pi-lab-1", "ssh", "rpi4", "pi-lab-1.local", "pi", 22)
    assert pi.identity.endswith("/.ssh/id_ed25519") and not pi.identity.startswith("~")
    assert pi.labels == ("lab",) and pi.workdir == "/tmp/edgekit" and pi.host_key_checking is True
    assert pi.address == "pi@pi-lab-1.local:22"
    assert arm.transport == "qemu" and arm.qemu_cpu == "cortex-a72"     # rpi4: Cortex-A72
    assert select([pi, arm], "lab") == [pi] and select([pi, arm], "arm-emulated") == [arm]
    assert select([pi, arm], None) == [pi, arm]


def test_arm64_server_emulates_a_core_with_dot_product(tmp_path):
    f = write_devices(tmp_path / "d.toml", {"name": "a", "transport": "qemu", "target": "arm64-server"})
    assert load_devices(f)[0].qemu_cpu == "neoverse-n1"


def test_relative_paths_are_relative_to_the_devices_file(tmp_path):
    f = write_devices(tmp_path / "d.toml", {"name": "a", "transport": "ssh", "target": "rpi4", "host": "h",
                                            "identity": "keys/id", "known_hosts": "kh"})
    d = load_devices(f)[0]
    assert d.identity == str(tmp_path / "keys" / "id") and d.known_hosts == str(tmp_path / "kh")


@pytest.mark.parametrize("device, needles", [
    ({"name": "a", "transport": "ssh", "target": "rpi4", "host": "h", "hots": "x"}, ["device 'a'", "unknown key 'hots'"]),
    ({"name": "a", "transport": "ssh", "target": "rpi4", "host": "h", "port": "22"}, ["device 'a'", "port", "expected int"]),
    ({"name": "a", "transport": "ssh", "target": "rpi4", "host": "h", "port": 70000}, ["port = 70000"]),
    ({"name": "a", "transport": "ssh", "target": "rpi4"}, ["needs 'host'"]),
    ({"name": "a", "transport": "telnet", "target": "rpi4"}, ["transport = 'telnet'", "local, ssh, qemu"]),
    ({"name": "a", "transport": "local", "target": "rpi9"}, ["device 'a'", "unknown target 'rpi9'"]),
    ({"name": "a", "transport": "local", "target": "x86-avx2", "host": "h"}, ["key 'host' applies to transport ssh"]),
    ({"name": "a", "transport": "qemu", "target": "x86-avx2"}, ["emulates aarch64", "x86_64"]),
    ({"name": "a/b", "transport": "local", "target": "x86-avx2"}, ["name = 'a/b'"]),
    ({"transport": "local", "target": "x86-avx2"}, ["device #1", "missing required key 'name'"]),
    ({"name": "a", "transport": "ssh", "target": "rpi4", "host": "h", "host_key_checking": "no"},
     ["host_key_checking", "expected bool"]),
    ({"name": "a", "transport": "ssh", "target": "rpi4", "host": "h", "ssh_options": ["-v"]}, ["Key=Value"]),
    ({"name": "a", "transport": "qemu", "target": "rpi4", "cpu": "max"}, ["cpu = 'max'", "cortex-a72"]),
    ({"name": "a", "transport": "local", "target": "x86-avx2", "labels": "lab"}, ["labels", "expected list"]),
])
def test_bad_devices_name_file_device_and_key(tmp_path, device, needles):
    f = write_devices(tmp_path / "devices.toml", device)
    with pytest.raises(ConfigError) as e:
        load_devices(f)
    msg = str(e.value)
    assert str(f) in msg and len(msg.splitlines()) == 1
    for n in needles:
        assert n in msg, (n, msg)


def test_file_level_errors(tmp_path):
    with pytest.raises(ConfigError, match="devices file not found"):
        load_devices(tmp_path / "nope.toml")
    f = tmp_path / "d.toml"
    f.write_text("[[device]\n")
    with pytest.raises(ConfigError, match="not valid TOML"):
        load_devices(f)
    f.write_text("[device]\nname = 'a'\n")
    with pytest.raises(ConfigError, match=r"array of tables \(\[\[device\]\]\)"):
        load_devices(f)
    f.write_text("[defaults]\nuser = 'pi'\n")
    with pytest.raises(ConfigError, match="unknown top-level key 'defaults'"):
        load_devices(f)
    write_devices(f, {"name": "a", "transport": "local", "target": "x86-avx2"},
                  {"name": "a", "transport": "local", "target": "x86-vnni"})
    with pytest.raises(ConfigError, match="'a' is used twice"):
        load_devices(f)
    write_devices(f, {"name": "a", "transport": "local", "target": "x86-avx2", "labels": ["x"]})
    with pytest.raises(ConfigError, match="--only 'zz' matches no device name or label"):
        select(load_devices(f), "zz", f)


def test_cli_lists_devices_and_reports_bad_files_on_one_line(tmp_path):
    f = tmp_path / "devices.toml"
    f.write_text(ISSUE_EXAMPLE)
    proc = run_cli("devices", "--devices", f, "--json")
    assert proc.returncode == 0, proc.stderr
    rows = json.loads(proc.stdout)
    assert [r["name"] for r in rows] == ["pi-lab-1", "arm-emulated"]
    assert rows[0]["address"] == "pi@pi-lab-1.local:22" and rows[0]["labels"] == ["lab"]
    proc = run_cli("devices", "--devices", f)
    assert proc.returncode == 0 and "pi-lab-1" in proc.stdout and "qemu-user cortex-a72" in proc.stdout
    f.write_text(ISSUE_EXAMPLE.replace('port = 22', 'port = 22\nhots = "x"'))
    assert_one_line_error(run_cli("devices", "--devices", f), str(f), "device 'pi-lab-1'", "unknown key 'hots'")
    assert_one_line_error(run_cli("devices", "--devices", tmp_path / "none.toml"), "devices file not found")


def test_check_finds_the_runtime_here_and_names_what_to_install_elsewhere(tmp_path):
    f = write_devices(tmp_path / "devices.toml",
                      {"name": "here", "transport": "local", "target": "x86-avx2", "python": sys.executable},
                      # Debian's python3 has neither numpy nor onnxruntime
                      {"name": "bare", "transport": "local", "target": "x86-avx2", "python": "/usr/bin/python3"},
                      {"name": "nopython", "transport": "local", "target": "x86-avx2",
                       "python": str(tmp_path / "no-such-python")})
    proc = run_cli("devices", "--devices", f, "--check", "--json")
    assert proc.returncode == 1, proc.stderr  # not every device is ready
    rows = {r["name"]: r["check"] for r in json.loads(proc.stdout)}
    here = rows["here"]
    assert here["ok"] and here["reachable"] and here["runtime"].startswith("onnxruntime ")
    assert here["machine"] == "x86_64" and here["numpy"]
    bare = rows["bare"]
    if bare["numpy"] is None or bare["runtime"] is None:  # true on a stock Debian 12
        assert not bare["ok"] and bare["reachable"]
        assert "pip install" in bare["install"] and "onnxruntime" in bare["install"]
        assert any("missing on the device" in p for p in bare["problems"])
    assert not rows["nopython"]["ok"] and "no-such-python" in rows["nopython"]["problems"][0]
    proc = run_cli("devices", "--devices", f, "--check", "--only", "here")
    assert proc.returncode == 0 and "ok" in proc.stdout


def test_shipped_emulated_inventory_loads():
    """examples/devices/emulated-arm.toml (used by the README's MiniLM example) stays valid."""
    from ektest import REPO
    devices = load_devices(REPO / "examples" / "devices" / "emulated-arm.toml")
    assert {(d.name, d.transport, d.target) for d in devices} == {
        ("pi4-emulated", "qemu", "rpi4"), ("graviton-emulated", "qemu", "arm64-server")}


def test_registry_names_match_the_inventory():
    from edgekit.devices.inventory import TRANSPORTS
    from edgekit.devices.transports import REGISTRY
    assert set(REGISTRY) == set(TRANSPORTS)
