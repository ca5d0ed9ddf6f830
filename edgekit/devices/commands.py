"""CLI commands of this stage: register(subparsers) adds them to `edgekit`."""


def register(sub) -> None:
    pass
