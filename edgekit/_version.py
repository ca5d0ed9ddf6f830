"""The package version, in a module of its own: modules that record it (convert's manifest, the CLI's
--version) import it from here, not from the package, whose __init__ imports them (no import circle)."""

__version__ = "0.1.0"
