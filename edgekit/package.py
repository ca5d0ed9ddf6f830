"""edgekit package: a bundle as a multi-arch OCI image archive, built without a Docker daemon or registry.

    edgekit package BUNDLE --out IMAGE.tar [--arch amd64 --arch arm64] [--base debian-slim]

Per architecture, two layers on an empty base (../shared/docs/CONTAINERS.md):
  1. a minimal Debian 12 root with Python 3.11 (Debian's own .deb files, fetched through a private
     apt state for that architecture and unpacked: the packages the emulated ARM device uses too), and
     the device-side Python packages as PyPI wheels for that platform (numpy, the bundle's runtime,
     tokenizers where the bundle has a tokenizer, starlette, uvicorn, prometheus-client) in
     /opt/edgekit/site-packages;
  2. the bundle in /opt/edgekit/bundle; entrypoint: its server (server/run.py) on 0.0.0.0:8000.
The image is an OCI layout (oci-layout, index.json, blobs/sha256) in one tar: an index whose manifests
carry platform {os: linux, architecture}; annotations carry the bundle's name, manifest sha256,
licence and, when the bundle is signed, manifest.sig (base64). Byte-reproducible: sorted tar entries,
mtime 0, uid/gid 0, gzip without a timestamp, and a fixed `created`, so two builds have one digest.
The base layer is cached per architecture and package set under ${EDGEKIT_CACHE:-~/.cache/edgekit}/oci.
"""

from __future__ import annotations

import base64
import gzip
import hashlib
import io
import json
import os
import shutil
import subprocess
import sys
import tarfile
import tempfile
from pathlib import Path

from .errors import BundleError, ConfigError, EdgekitError

ARCHES = {"amd64": {"deb": "amd64", "pip": ["manylinux_2_28_x86_64", "manylinux_2_17_x86_64", "manylinux2014_x86_64"]},
          "arm64": {"deb": "arm64", "pip": ["manylinux_2_35_aarch64", "manylinux_2_28_aarch64", "manylinux_2_17_aarch64",
                                            "manylinux2014_aarch64"]}}
BASES = ("debian-slim",)
# Debian 12 packages of a Python 3.11 root (the list scripts/build_arm_root.sh unpacks for the emulated device).
DEBS = ("libc6 libgcc-s1 libstdc++6 gcc-12-base libcrypt1 zlib1g libexpat1 libffi8 libssl3 libbz2-1.0 liblzma5 "
        "libzstd1 libsqlite3-0 libuuid1 libncursesw6 libtinfo6 libreadline8 libnsl2 libtirpc3 libgssapi-krb5-2 "
        "libkrb5-3 libk5crypto3 libkrb5support0 libkeyutils1 libcom-err2 libdb5.3 libgdbm6 libgomp1 "
        "libpython3.11-minimal libpython3.11-stdlib python3.11-minimal").split()
SERVER_PACKAGES = ("starlette", "uvicorn", "prometheus-client")
RUNTIME_PACKAGES = {"onnxruntime": "onnxruntime", "openvino": "openvino", "litert": "ai-edge-litert"}
EPOCH = "1970-01-01T00:00:00Z"
SITE = "opt/edgekit/site-packages"
APP = "opt/edgekit/bundle"


class PackageError(EdgekitError):
    pass


def cache_dir() -> Path:
    return Path(os.environ.get("EDGEKIT_CACHE") or Path.home() / ".cache" / "edgekit") / "oci"


def _pins() -> dict[str, str]:
    lock = Path(__file__).resolve().parent.parent / "requirements-lock.txt"
    pins = {}
    if lock.is_file():
        for line in lock.read_text().splitlines():
            if "==" in line and not line.startswith("#"):
                k, v = line.split("==", 1)
                pins[k.strip().lower()] = v.strip()
    import numpy
    pins.setdefault("numpy", numpy.__version__)
    return pins


def _run(cmd: list[str], what: str, **kw) -> None:
    p = subprocess.run(cmd, capture_output=True, text=True, **kw)
    if p.returncode != 0:
        last = (p.stderr.strip().splitlines() or p.stdout.strip().splitlines() or ["no output"])[-1]
        raise PackageError(f"{what} failed: {last[:300]}")


def debian_root(arch: str, work: Path) -> Path:
    """Debian's packages for `arch`, unpacked (a private apt state: nothing global changes)."""
    if shutil.which("apt-get") is None or shutil.which("dpkg") is None:
        raise PackageError("apt-get and dpkg are needed to fetch Debian's packages (a Debian/Ubuntu machine)")
    deb = ARCHES[arch]["deb"]
    a = work / "apt"
    for d in ("lists/partial", "cache/archives/partial", "parts"):
        (a / d).mkdir(parents=True, exist_ok=True)
    (a / "status").touch()
    for f in list(Path("/etc/apt/sources.list.d").glob("*.sources")) + list(Path("/etc/apt/sources.list.d").glob("*.list")) \
            + [Path("/etc/apt/sources.list")]:
        if f.is_file():
            shutil.copyfile(f, a / "parts" / f.name)
    opts = ["-o", f"APT::Architecture={deb}", "-o", f"APT::Architectures={deb}", "-o", "Dir::Etc::SourceList=/dev/null",
            "-o", f"Dir::Etc::SourceParts={a / 'parts'}", "-o", f"Dir::State::Lists={a / 'lists'}",
            "-o", f"Dir::Cache={a / 'cache'}", "-o", f"Dir::State::Status={a / 'status'}",
            "-o", "APT::Sandbox::User=root", "-q"]
    _run(["apt-get", *opts, "update"], f"apt-get update ({deb})")
    debs = work / "debs"
    debs.mkdir(exist_ok=True)
    _run(["apt-get", *opts, "download", *DEBS], f"apt-get download ({deb})", cwd=debs)
    root = work / "root"
    root.mkdir(exist_ok=True)
    for f in sorted(debs.glob("*.deb")):
        _run(["dpkg", "-x", str(f), str(root)], f"dpkg -x {f.name}")
    if not (root / "usr/bin/python3.11").exists():
        raise PackageError(f"python3.11 missing from the unpacked {deb} packages")
    return root


def wheels(arch: str, packages: list[str], dest: Path) -> None:
    plats = [x for p in ARCHES[arch]["pip"] for x in ("--platform", p)]
    _run([sys.executable, "-m", "pip", "install", "-q", "--disable-pip-version-check", "--no-compile",
          "--target", str(dest), "--only-binary=:all:", "--python-version", "3.11", "--implementation", "cp",
          "--abi", "cp311", *plats, *packages], f"pip (wheels for linux/{arch}: {' '.join(packages)})")


def _tar_gz(src: Path, prefix: str, out: Path) -> tuple[str, str, int]:
    """A reproducible layer: (sha256 of the tar = diff_id, sha256 of the .tar.gz = digest, size)."""
    raw = io.BytesIO()
    with tarfile.open(fileobj=raw, mode="w", format=tarfile.PAX_FORMAT) as tf:
        entries = sorted(p for p in src.rglob("*"))
        dirs = set()
        for part in Path(prefix).parents if prefix else []:
            if str(part) not in (".", ""):
                dirs.add(str(part))
        for d in sorted(dirs) + ([prefix] if prefix else []):
            ti = tarfile.TarInfo(d)
            ti.type, ti.mode, ti.mtime = tarfile.DIRTYPE, 0o755, 0
            tf.addfile(ti)
        for p in entries:
            name = str(Path(prefix) / p.relative_to(src)) if prefix else str(p.relative_to(src))
            ti = tf.gettarinfo(str(p), arcname=name)
            ti.mtime, ti.uid, ti.gid, ti.uname, ti.gname = 0, 0, 0, "", ""
            ti.pax_headers = {}
            if p.is_symlink() or p.is_dir():
                tf.addfile(ti)
            else:
                with open(p, "rb") as f:
                    tf.addfile(ti, f)
    data = raw.getvalue()
    gz = io.BytesIO()
    with gzip.GzipFile(fileobj=gz, mode="wb", mtime=0, compresslevel=6) as g:
        g.write(data)
    blob = gz.getvalue()
    digest = hashlib.sha256(blob).hexdigest()
    out.write_bytes(blob)
    return hashlib.sha256(data).hexdigest(), digest, len(blob)


def _blob(blobs: Path, data: bytes) -> tuple[str, int]:
    d = hashlib.sha256(data).hexdigest()
    (blobs / d).write_bytes(data)
    return d, len(data)


def _json(obj) -> bytes:
    return json.dumps(obj, sort_keys=True, separators=(",", ":")).encode()


def base_layer(arch: str, packages: list[str]) -> tuple[Path, str, str, int]:
    """The root + wheels layer, cached by architecture and package set."""
    key = hashlib.sha256(_json({"arch": arch, "debs": DEBS, "packages": packages})).hexdigest()[:16]
    d = cache_dir() / f"base-{arch}-{key}"
    meta = d / "layer.json"
    if meta.is_file():
        m = json.loads(meta.read_text())
        return d / "layer.tar.gz", m["diff_id"], m["digest"], m["size"]
    cache_dir().mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix=f"base-{arch}-", dir=cache_dir()))
    try:
        root = debian_root(arch, work)
        wheels(arch, packages, root / SITE)
        for junk in ("usr/share/doc", "usr/share/man", "usr/share/locale"):
            shutil.rmtree(root / junk, ignore_errors=True)
        (root / "tmp").mkdir(exist_ok=True)
        layer = work / "layer.tar.gz"
        diff_id, digest, size = _tar_gz(root, "", layer)
        final = work / "final"
        final.mkdir()
        shutil.move(str(layer), final / "layer.tar.gz")
        (final / "layer.json").write_text(json.dumps({"diff_id": diff_id, "digest": digest, "size": size}))
        if d.exists():
            shutil.rmtree(d)
        os.replace(final, d)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return d / "layer.tar.gz", diff_id, digest, size


def package(bundle: str | Path, out: str | Path, arches: list[str] | None = None, base: str = "debian-slim") -> dict:
    from .bundle import verify
    b = Path(bundle)
    arches = arches or ["amd64"]
    for a in arches:
        if a not in ARCHES:
            raise ConfigError(f"--arch {a!r} is not valid; expected one of {', '.join(ARCHES)}")
    if base not in BASES:
        raise ConfigError(f"--base {base!r} is not valid; expected one of {', '.join(BASES)}")
    manifest = verify(b)  # a tampered bundle is never packed
    from .bundle import manifest_sha256
    sha = manifest_sha256(b)
    if not (b / "server" / "run.py").is_file():
        raise BundleError(f"{b}: no server/run.py (bundle converted before edgekit serve existed): convert it again")
    runtime = manifest["model"]["runtime"]
    pins = _pins()
    pkgs = ["numpy", RUNTIME_PACKAGES[runtime], *SERVER_PACKAGES]
    if (b / "tokenizer.json").is_file():
        pkgs.append("tokenizers")
    pkgs = [f"{p}=={pins[p.lower()]}" if p.lower() in pins else p for p in pkgs]
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix=f".{out.name}.partial-", dir=out.parent))
    try:
        layout = work / "layout"
        blobs = layout / "blobs" / "sha256"
        blobs.mkdir(parents=True)
        app_tgz = work / "app.tar.gz"
        app_diff, app_digest, app_size = _tar_gz(b, APP, app_tgz)
        shutil.copyfile(app_tgz, blobs / app_digest)
        provenance = manifest.get("provenance") or {}
        annotations = {"org.opencontainers.image.title": manifest["bundle"]["name"],
                       "org.opencontainers.image.licenses": provenance.get("license") or "unknown",
                       "org.opencontainers.image.created": EPOCH,
                       "dev.edgekit.bundle.manifest-sha256": sha,
                       "dev.edgekit.bundle.task": manifest["model"].get("task") or "classification"}
        if (b / "manifest.sig").is_file():
            annotations["dev.edgekit.bundle.signature"] = base64.b64encode((b / "manifest.sig").read_bytes()).decode()
        entries, sizes = [], {}
        for arch in arches:
            layer, diff_id, digest, size = base_layer(arch, pkgs)
            shutil.copyfile(layer, blobs / digest)
            config = {"architecture": arch, "os": "linux", "created": EPOCH,
                      "config": {"Entrypoint": ["/usr/bin/python3.11", f"/{APP}/server/run.py", "--host", "0.0.0.0",
                                                "--port", "8000"],
                                 "Env": [f"PYTHONPATH=/{SITE}", "PYTHONDONTWRITEBYTECODE=1", "PATH=/usr/bin:/bin"],
                                 "ExposedPorts": {"8000/tcp": {}}, "WorkingDir": f"/{APP}", "Labels": annotations},
                      "rootfs": {"type": "layers", "diff_ids": [f"sha256:{diff_id}", f"sha256:{app_diff}"]}}
            cdig, csize = _blob(blobs, _json(config))
            man = {"schemaVersion": 2, "mediaType": "application/vnd.oci.image.manifest.v1+json",
                   "config": {"mediaType": "application/vnd.oci.image.config.v1+json", "digest": f"sha256:{cdig}",
                              "size": csize},
                   "layers": [{"mediaType": "application/vnd.oci.image.layer.v1.tar+gzip", "digest": f"sha256:{d}",
                               "size": s} for d, s in ((digest, size), (app_digest, app_size))],
                   "annotations": annotations}
            mdig, msize = _blob(blobs, _json(man))
            # ref.name: podman/skopeo pick one image of a multi-image archive by it (oci-archive:IMAGE.tar:amd64);
            # `skopeo copy --multi-arch all` pushes the whole index to a registry.
            entries.append({"mediaType": "application/vnd.oci.image.manifest.v1+json", "digest": f"sha256:{mdig}",
                            "size": msize, "platform": {"architecture": arch, "os": "linux"},
                            "annotations": {"org.opencontainers.image.ref.name": arch}})
            sizes[arch] = round((size + app_size + csize + msize) / 2**20, 3)
        index = {"schemaVersion": 2, "mediaType": "application/vnd.oci.image.index.v1+json", "manifests": entries,
                 "annotations": annotations}
        (layout / "index.json").write_bytes(_json(index))
        (layout / "oci-layout").write_bytes(_json({"imageLayoutVersion": "1.0.0"}))
        tmp_tar = work / "image.tar"
        with tarfile.open(tmp_tar, "w", format=tarfile.PAX_FORMAT) as tf:
            for p in sorted(layout.rglob("*")):
                ti = tf.gettarinfo(str(p), arcname=str(p.relative_to(layout)))
                ti.mtime, ti.uid, ti.gid, ti.uname, ti.gname = 0, 0, 0, "", ""
                if p.is_dir():
                    tf.addfile(ti)
                else:
                    with open(p, "rb") as f:
                        tf.addfile(ti, f)
        os.replace(tmp_tar, out)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    digest = hashlib.sha256(out.read_bytes()).hexdigest()
    size_mb = out.stat().st_size / 2**20
    budget = ((manifest.get("target") or {}).get("budget") or {}).get("max_image_mb")
    if budget is not None and max(sizes.values()) > budget:
        out.unlink()
        from .errors import BudgetError
        raise BudgetError(f"{b}: image of {max(sizes.values()):.1f} MiB per architecture > max_image_mb {budget:g} "
                          f"of target {(manifest.get('target') or {}).get('name')} (nothing written)")
    return {"image": str(out), "sha256": digest, "index_digest": "sha256:" + hashlib.sha256(_json(index)).hexdigest(),
            "arches": arches, "size_mb": round(size_mb, 3), "per_arch_mb": sizes, "packages": pkgs,
            "max_image_mb": budget}
