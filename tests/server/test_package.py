"""edgekit package: a multi-arch OCI image archive, byte-reproducible, run with podman (amd64) and its
arm64 root under the emulated ARM CPU (qemu-user), answering health and infer from inside."""

from __future__ import annotations

import gzip
import io
import json
import shutil
import socket
import subprocess
import tarfile
import time
import urllib.request
from pathlib import Path

import numpy as np
import pytest

from ektest import assert_one_line_error, run_cli

pytestmark = pytest.mark.slow


def _port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _wait_ready(port: int, proc=None, seconds: float = 300) -> dict:
    deadline = time.time() + seconds
    while time.time() < deadline:
        if proc is not None and proc.poll() is not None:
            raise AssertionError(f"exited {proc.returncode}: {proc.stderr.read() if proc.stderr else ''}")
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/v2/health/ready", timeout=5) as r:
                return json.loads(r.read())
        except OSError:
            time.sleep(1)
    raise AssertionError("no ready answer")


def _infer(port: int, name: str, x: np.ndarray) -> np.ndarray:
    body = json.dumps({"inputs": [{"name": "x", "shape": list(x.shape), "datatype": "FP32",
                                   "data": x.reshape(-1).tolist()}]}).encode()
    req = urllib.request.Request(f"http://127.0.0.1:{port}/v2/models/{name}/infer", data=body,
                                 headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(req, timeout=120) as r:
        out = json.loads(r.read())["outputs"][0]
    return np.asarray(out["data"], np.float32).reshape(out["shape"])


@pytest.fixture(scope="module")
def image(digits_bundles, tmp_path_factory):
    if shutil.which("apt-get") is None:
        pytest.skip("apt-get not found: edgekit package builds the image root from Debian's packages")
    b = digits_bundles["int8"].path
    d = tmp_path_factory.mktemp("image")
    r = run_cli("package", str(b), "--out", str(d / "a.tar"), "--arch", "amd64", "--arch", "arm64")
    assert r.returncode == 0, r.stderr
    return b, d / "a.tar"


def _layout(tar: Path) -> dict:
    with tarfile.open(tar) as tf:
        files = {m.name: tf.extractfile(m).read() for m in tf.getmembers() if m.isfile()}
    return files


def test_image_is_a_reproducible_multi_arch_oci_index(image, tmp_path):
    b, tar = image
    r = run_cli("package", str(b), "--out", str(tmp_path / "b.tar"), "--arch", "amd64", "--arch", "arm64")
    assert r.returncode == 0, r.stderr
    assert (tmp_path / "b.tar").read_bytes() == tar.read_bytes()  # two builds, one digest
    files = _layout(tar)
    assert json.loads(files["oci-layout"]) == {"imageLayoutVersion": "1.0.0"}
    index = json.loads(files["index.json"])
    assert sorted(m["platform"]["architecture"] for m in index["manifests"]) == ["amd64", "arm64"]
    m = json.loads((b / "manifest.json").read_text())
    ann = index["annotations"]
    assert ann["org.opencontainers.image.licenses"] == m["provenance"]["license"]
    import hashlib
    assert ann["dev.edgekit.bundle.manifest-sha256"] == hashlib.sha256((b / "manifest.json").read_bytes()).hexdigest()
    for entry in index["manifests"]:
        man = json.loads(files["blobs/sha256/" + entry["digest"].split(":")[1]])
        cfg = json.loads(files["blobs/sha256/" + man["config"]["digest"].split(":")[1]])
        assert cfg["architecture"] == entry["platform"]["architecture"]
        for layer, diff in zip(man["layers"], cfg["rootfs"]["diff_ids"]):
            blob = files["blobs/sha256/" + layer["digest"].split(":")[1]]
            assert hashlib.sha256(blob).hexdigest() == layer["digest"].split(":")[1] and len(blob) == layer["size"]
            assert hashlib.sha256(gzip.decompress(blob)).hexdigest() == diff.split(":")[1]


def test_amd64_image_serves_under_podman(image, tmp_path):
    missing = [t for t in ("podman", "runc") if shutil.which(t) is None]
    if missing:
        pytest.skip(f"{' and '.join(missing)} not installed (make test-deps installs Debian's podman and runc)")
    b, tar = image
    conf = tmp_path / "containers.conf"  # CONTAINERS.md: runc, cgroupfs, no default ulimits (sandbox limits)
    conf.write_text('[containers]\ndefault_ulimits = []\n[engine]\ncgroup_manager = "cgroupfs"\n')
    env = {"CONTAINERS_CONF": str(conf), "PATH": "/usr/bin:/bin:/usr/sbin:/sbin"}
    port = _port()
    name = f"edgekit-test-{port}"
    import tempfile
    run = tempfile.mkdtemp(prefix="ekp-", dir="/tmp")  # podman: a runroot path of at most 50 characters
    base = ["podman", "--runtime", "runc", "--storage-driver", "vfs", "--root", str(tmp_path / "storage"),
            "--runroot", run]
    p = subprocess.run([*base, "run", "-d", "--name", name, "--network=host", f"oci-archive:{tar}:amd64",
                        "--port", str(port)], capture_output=True, text=True, env=env, timeout=600)
    assert p.returncode == 0, p.stderr
    try:
        assert _wait_ready(port)["ready"] is True
        with np.load(b / "validation.npz") as z:
            x, y = z["input.x"][:8], z["labels"][:8]
        bundle_name = json.loads((b / "manifest.json").read_text())["bundle"]["name"]
        assert (_infer(port, bundle_name, x).argmax(1) == y).mean() >= 0.75
    finally:
        subprocess.run([*base, "rm", "-f", name], capture_output=True, env=env, timeout=120)
        shutil.rmtree(run, ignore_errors=True)


def test_arm64_image_root_serves_under_emulation(image, tmp_path):
    from edgekit.devices.qemu import default_root, root_problem
    problem = root_problem(default_root(), "cortex-a72")
    if problem:
        pytest.skip(problem)
    b, tar = image
    files = _layout(tar)
    index = json.loads(files["index.json"])
    entry = next(m for m in index["manifests"] if m["platform"]["architecture"] == "arm64")
    man = json.loads(files["blobs/sha256/" + entry["digest"].split(":")[1]])
    root = tmp_path / "root"
    root.mkdir()
    for layer in man["layers"]:
        with tarfile.open(fileobj=io.BytesIO(files["blobs/sha256/" + layer["digest"].split(":")[1]]), mode="r:gz") as tf:
            tf.extractall(root, filter="tar")
    # qemu-user reads /proc/cpuinfo through -L: the emulated CPU's view (ARM_EMULATION.md trap)
    (root / "proc").mkdir(exist_ok=True)
    shutil.copyfile(default_root() / "cpu" / "cortex-a72" / "proc" / "cpuinfo", root / "proc" / "cpuinfo")
    port = _port()
    qemu = default_root() / "bin" / "qemu-aarch64-static"
    proc = subprocess.Popen([str(qemu), "-cpu", "cortex-a72", "-L", str(root), str(root / "usr/bin/python3.11"),
                             "/opt/edgekit/bundle/server/run.py", "--port", str(port)],
                            env={"PYTHONPATH": "/opt/edgekit/site-packages", "PYTHONDONTWRITEBYTECODE": "1"},
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    try:
        assert _wait_ready(port, proc, 600)["ready"] is True
        with np.load(b / "validation.npz") as z:
            x = z["input.x"][:4]
        bundle_name = json.loads((b / "manifest.json").read_text())["bundle"]["name"]
        assert _infer(port, bundle_name, x).shape[0] == 4
    finally:
        proc.terminate()
        proc.wait(timeout=60)
        proc.stderr.close()


def test_bad_package_input(digits_bundles, tmp_path, bundle_copy):
    r = run_cli("package", str(tmp_path / "nope"), "--out", str(tmp_path / "x.tar"))
    assert_one_line_error(r)
    b = bundle_copy()
    with open(b / "model.onnx", "ab") as f:
        f.write(b"\0")
    r = run_cli("package", str(b), "--out", str(tmp_path / "x.tar"))
    assert_one_line_error(r, "sha256")
    assert not (tmp_path / "x.tar").exists()
