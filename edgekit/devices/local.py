"""This machine as a device: the bundle is copied to a fresh work folder and its harness runs here,
in a fresh process group, exactly as on a board (the same command line the SSH transport sends)."""

from __future__ import annotations

import os
import shutil
import sys
import tempfile
from pathlib import Path

from .base import DeviceError, Transport, bundle_files, open_bundle_file, run_local


class LocalTransport(Transport):
    def __init__(self, device):
        super().__init__(device)

    @property
    def python(self) -> str:
        return self.device.python or sys.executable

    def env(self) -> dict:
        env = dict(os.environ)
        env["PYTHONDONTWRITEBYTECODE"] = "1"
        return env

    def put(self, bundle: Path, extra: tuple[Path, ...] = ()) -> str:
        bundle = Path(bundle)
        files = bundle_files(bundle)
        base = Path(self.device.workdir)
        try:
            base.mkdir(parents=True, exist_ok=True)
            self.remote_dir = tempfile.mkdtemp(prefix="run.", dir=base)
            dest = Path(self.remote_dir) / bundle.name
            for rel in files:
                (dest / rel).parent.mkdir(parents=True, exist_ok=True)
                # Bytes of the checked regular file, never a link re-created or followed.
                with open_bundle_file(bundle, rel) as src, open(dest / rel, "wb") as out:
                    shutil.copyfileobj(src, out, 1 << 20)
            for f in extra:  # beside the bundle, e.g. the public key for --pubkey
                shutil.copyfile(f, Path(self.remote_dir) / Path(f).name)
        except OSError as exc:
            kind = "no-space" if getattr(exc, "errno", None) == 28 else "error"
            raise DeviceError(f"{base}: cannot copy the bundle ({exc.strerror or exc})", kind) from exc
        return str(dest)

    def run(self, cmd: list[str], timeout: float | None = None) -> tuple[int, str, str]:
        return run_local(cmd, timeout, env=self.env(), cwd=self.remote_dir)

    def get(self, remote: str, local: Path) -> None:
        try:
            shutil.copyfile(remote, local)
        except OSError as exc:
            raise DeviceError(f"{remote}: cannot fetch ({exc.strerror or exc})", "report") from exc

    def cleanup(self) -> None:
        if self.remote_dir:
            shutil.rmtree(self.remote_dir, ignore_errors=True)
            self.remote_dir = None
