"""devices.toml: the devices a fleet run may use, parsed and validated (format in docs/DEVICES.md).

```toml
[[device]]
name = "pi-lab-1"              # [A-Za-z0-9._-]+, unique; reports land in OUT/<name>/
transport = "ssh"              # local | ssh | qemu
target = "rpi4"                # the profile this device is an instance of (name or .toml path)
host = "pi-lab-1.local"        # ssh: host name, address or ~/.ssh/config alias
user = "pi"                    # ssh: optional (default: ~/.ssh/config, else the local user)
port = 22                      # ssh: optional
identity = "~/.ssh/id_ed25519" # ssh: optional private key (IdentitiesOnly=yes when given)
python = "/usr/bin/python3"    # interpreter on the device
workdir = "/tmp/edgekit"       # where bundles are copied (a fresh sub-folder per run, removed after)
labels = ["lab"]               # --only matches a name or a label
```

Every problem is a ConfigError naming the file, the device and the key, e.g.
``devices.toml: device 'pi-lab-1': unknown key 'hots'; valid keys: ...``.
"""

from __future__ import annotations

import dataclasses
import os
import re
from pathlib import Path
from typing import Any

from ..errors import ConfigError

TRANSPORTS = ("local", "ssh", "qemu")
QEMU_CPUS = ("cortex-a72", "neoverse-n1")
DEFAULT_FILE = "devices.toml"
DEFAULT_WORKDIR = "/tmp/edgekit"

# key -> (accepted types, transports it applies to; None = every transport)
_KEYS: dict[str, tuple[type | tuple[type, ...], tuple[str, ...] | None]] = {
    "name": (str, None),
    "transport": (str, None),
    "target": (str, None),
    "labels": (list, None),
    "python": (str, None),
    "workdir": (str, None),
    "timeout": ((int, float), None),       # seconds one harness run may take (default: fleet's)
    "description": (str, None),
    "host": (str, ("ssh",)),
    "user": (str, ("ssh",)),
    "port": (int, ("ssh",)),
    "identity": (str, ("ssh",)),
    "host_key_checking": (bool, ("ssh",)),  # default true: StrictHostKeyChecking=yes
    "known_hosts": (str, ("ssh",)),         # a known_hosts file other than ~/.ssh/known_hosts
    "ssh_config": (str, ("ssh",)),          # an ssh_config file other than ~/.ssh/config (-F)
    "ssh_options": (list, ("ssh",)),        # extra "Key=Value" options (-o)
    "connect_timeout": (int, ("ssh",)),     # seconds (default 10)
    "root": (str, ("qemu",)),               # the emulated ARM root (default: the build cache)
    "cpu": (str, ("qemu",)),                # cortex-a72 | neoverse-n1 (default from the profile)
}


@dataclasses.dataclass(frozen=True)
class Device:
    name: str
    transport: str
    target: str                       # profile name (or path) as written
    profile: Any                      # edgekit.targets.TargetProfile
    labels: tuple[str, ...] = ()
    python: str | None = None         # None: the transport's default
    workdir: str = DEFAULT_WORKDIR
    timeout: float | None = None
    description: str | None = None
    host: str | None = None
    user: str | None = None
    port: int | None = None
    identity: str | None = None
    host_key_checking: bool = True
    known_hosts: str | None = None
    ssh_config: str | None = None
    ssh_options: tuple[str, ...] = ()
    connect_timeout: int = 10
    root: str | None = None
    cpu: str | None = None
    source: str = DEFAULT_FILE        # the devices file it came from

    @property
    def address(self) -> str:
        """Where the device is, for tables: user@host:port, the emulated CPU, or this machine."""
        if self.transport == "ssh":
            user = f"{self.user}@" if self.user else ""
            port = f":{self.port}" if self.port else ""
            return f"{user}{self.host}{port}"
        if self.transport == "qemu":
            return f"qemu-user {self.qemu_cpu}"
        return "this machine"

    @property
    def qemu_cpu(self) -> str:
        """The emulated CPU model: the device's `cpu`, else one that matches the profile's ISA
        (dot-product: Neoverse N1, the arm64 server class; otherwise Cortex-A72, the Raspberry Pi 4)."""
        if self.cpu:
            return self.cpu
        return "neoverse-n1" if "dotprod" in tuple(getattr(self.profile, "isa", ())) else "cortex-a72"

    def matches(self, only: str | None) -> bool:
        return only is None or only == self.name or only in self.labels

    def to_dict(self) -> dict:
        d = dataclasses.asdict(self)
        d.pop("profile")
        d["labels"] = list(self.labels)
        d["ssh_options"] = list(self.ssh_options)
        d["address"] = self.address
        return d


def _path(value: str, base: Path) -> str:
    """~ expanded; a relative path is relative to the devices file's folder."""
    p = Path(os.path.expanduser(value))
    return str(p if p.is_absolute() else (base / p))


def _device(raw: Any, index: int, file: Path) -> Device:
    where = f"{file}: device #{index + 1}"
    if not isinstance(raw, dict):
        raise ConfigError(f"{where}: expected a [[device]] table, got {type(raw).__name__}")
    name = raw.get("name")
    if isinstance(name, str):
        where = f"{file}: device {name!r}"
    for key, value in raw.items():
        if key not in _KEYS:
            raise ConfigError(f"{where}: unknown key '{key}'; valid keys: {', '.join(sorted(_KEYS))}")
        want = _KEYS[key][0]
        if (isinstance(value, bool) and want is not bool) or not isinstance(value, want):
            names = "/".join(t.__name__ for t in (want if isinstance(want, tuple) else (want,)))
            raise ConfigError(f"{where}: {key} = {value!r} has type {type(value).__name__}; expected {names}")
    for key in ("name", "transport", "target"):
        if key not in raw:
            raise ConfigError(f"{where}: missing required key '{key}'")
    if not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9._-]*", name):
        raise ConfigError(f"{where}: name = {name!r} must be letters, digits, '.', '_' and '-' "
                          "(it names the report folder)")
    transport = raw["transport"]
    if transport not in TRANSPORTS:
        raise ConfigError(f"{where}: transport = {transport!r} is not valid; expected one of "
                          f"{', '.join(TRANSPORTS)}")
    for key in raw:
        only = _KEYS[key][1]
        if only is not None and transport not in only:
            raise ConfigError(f"{where}: key '{key}' applies to transport {' / '.join(only)}, "
                              f"not {transport!r}")
    if transport == "ssh" and not raw.get("host"):
        raise ConfigError(f"{where}: transport 'ssh' needs 'host' (a host name, address or ~/.ssh/config alias)")
    for key in ("labels", "ssh_options"):
        for item in raw.get(key, []):
            if not isinstance(item, str) or not item:
                raise ConfigError(f"{where}: every entry of '{key}' must be a non-empty string, got {item!r}")
    for opt in raw.get("ssh_options", []):
        if not re.fullmatch(r"[A-Za-z][A-Za-z0-9]*=\S.*", opt):
            raise ConfigError(f"{where}: ssh_options entry {opt!r} must look like 'Key=Value' "
                              "(an ssh -o option)")
    if "port" in raw and not 1 <= raw["port"] <= 65535:
        raise ConfigError(f"{where}: port = {raw['port']} must be in 1..65535")
    for key in ("timeout", "connect_timeout"):
        if key in raw and not raw[key] > 0:
            raise ConfigError(f"{where}: {key} = {raw[key]!r} must be > 0 (seconds)")
    if "cpu" in raw and raw["cpu"] not in QEMU_CPUS:
        raise ConfigError(f"{where}: cpu = {raw['cpu']!r} is not valid; expected one of {', '.join(QEMU_CPUS)}")
    for key in ("host", "python", "workdir", "user"):
        if key in raw and (not raw[key].strip() or "\n" in raw[key]):
            raise ConfigError(f"{where}: {key} = {raw[key]!r} must be a non-empty single line")
    if "host" in raw and raw["host"].startswith("-"):
        raise ConfigError(f"{where}: host = {raw['host']!r} must not start with '-'")

    from ..targets import load_target
    target = raw["target"]
    spec = _path(target, file.parent) if target.endswith(".toml") else target
    try:
        profile = load_target(spec)
    except ConfigError as exc:
        raise ConfigError(f"{where}: target = {target!r}: {exc}") from exc
    if transport == "qemu" and profile.arch != "aarch64":
        raise ConfigError(f"{where}: transport 'qemu' emulates aarch64, but target {profile.name!r} "
                          f"is {profile.arch}")

    base = file.parent
    fields = dict(raw)
    fields["labels"] = tuple(raw.get("labels", ()))
    fields["ssh_options"] = tuple(raw.get("ssh_options", ()))
    for key in ("identity", "known_hosts", "ssh_config", "root"):
        if key in raw:
            fields[key] = _path(raw[key], base)
    if "timeout" in raw:
        fields["timeout"] = float(raw["timeout"])
    return Device(profile=profile, source=str(file), **fields)


def load_devices(path: str | Path | None = None) -> list[Device]:
    """Parse and validate a devices file (default ./devices.toml)."""
    file = Path(path) if path else Path(DEFAULT_FILE)
    from ..tomlfile import read_toml
    hint = " (pass --devices FILE)" if path is None else ""
    raw = read_toml(file, "devices", f"{hint}; format in docs/DEVICES.md")
    unknown = [k for k in raw if k != "device"]
    if unknown:
        raise ConfigError(f"{file}: unknown top-level key '{unknown[0]}'; devices are [[device]] tables")
    entries = raw.get("device")
    if entries is None:
        raise ConfigError(f"{file}: no [[device]] table")
    if not isinstance(entries, list):
        raise ConfigError(f"{file}: 'device' must be an array of tables ([[device]]), not a single table")
    devices = [_device(e, i, file) for i, e in enumerate(entries)]
    seen: set[str] = set()
    for d in devices:
        if d.name in seen:
            raise ConfigError(f"{file}: device name {d.name!r} is used twice (names must be unique)")
        seen.add(d.name)
    return devices


def select(devices: list[Device], only: str | None, file: str | Path | None = None) -> list[Device]:
    """The devices named `only` or carrying it as a label (all when only is None)."""
    chosen = [d for d in devices if d.matches(only)]
    if not chosen:
        names = ", ".join(d.name for d in devices)
        labels = sorted({lab for d in devices for lab in d.labels})
        raise ConfigError(f"{file or DEFAULT_FILE}: --only {only!r} matches no device name or label "
                          f"(names: {names}; labels: {', '.join(labels) or 'none'})")
    return chosen
