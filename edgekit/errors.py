"""Every error a user can cause is an EdgekitError; the CLI prints it on one line and exits 2.

    EdgekitError
    ├── ConfigError        a target profile, recipe or flag is wrong (unknown key, bad type or value)
    ├── SourceError        the source model is missing, corrupt, or its factory failed
    ├── DataError          calibration / validation data do not fit the model, or hold NaN/Inf
    ├── BackendError       a runtime could not export, quantize or load the model
    │   └── MissingExtraError  the runtime for a profile is not installed (names the pip extra)
    ├── BudgetError        the model cannot fit its target (checked before anything runs on a device)
    ├── BundleError        a bundle is incomplete, or its files do not match the manifest
    └── ReportError        a file is not an edgekit report, or does not match the bundle named
"""

from __future__ import annotations


class EdgekitError(Exception):
    """Base of every user-facing error: the message is one line that names the file, key or value."""

    exit_code = 2


class ConfigError(EdgekitError):
    pass


class SourceError(EdgekitError):
    pass


class DataError(EdgekitError):
    pass


class BackendError(EdgekitError):
    pass


class MissingExtraError(BackendError):
    def __init__(self, module: str, extra: str, purpose: str = ""):
        why = f" for {purpose}" if purpose else ""
        super().__init__(
            f"{module} is not installed{why}: pip install 'edgekit[{extra}]'"
        )
        self.module = module
        self.extra = extra


class BudgetError(EdgekitError):
    pass


class BundleError(EdgekitError):
    pass


class ReportError(EdgekitError):
    pass
