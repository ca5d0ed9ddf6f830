"""Which transport runs a device: the registry of transports, one line per `transport = "..."`.

It sits above base.py and the transports (local.py, ssh.py, qemu.py import base.py; this module
imports them), so every import points down. base.py used to hold transport_for and import the very
transports that import it; fleet.py and commands.py now ask here.

    t = transport_for(device)      # a Transport (base.py's protocol) for one inventory Device
"""

from __future__ import annotations

from .base import DeviceError, Transport
from .inventory import TRANSPORTS as NAMES
from .local import LocalTransport
from .qemu import QemuTransport
from .ssh import SshTransport

# The names are inventory.TRANSPORTS (what a devices file may say); both are checked to agree in
# tests/devices/test_devices_imports.py.
REGISTRY: dict[str, type[Transport]] = {"local": LocalTransport, "ssh": SshTransport, "qemu": QemuTransport}


def transport_for(device) -> Transport:
    cls = REGISTRY.get(device.transport)
    if cls is None:  # inventory validates the name; a Device built by hand may not have been
        raise DeviceError(f"device {device.name!r}: unknown transport {device.transport!r}; valid: "
                          f"{', '.join(NAMES)}", "error")
    return cls(device)
