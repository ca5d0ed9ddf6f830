"""rich output helpers: progress bars for long work, a console wide enough for tables in CI logs."""

from __future__ import annotations

import contextlib


@contextlib.contextmanager
def steps(total: int, what: str, enabled: bool = True):
    """Yields advance(label): call it as each step starts."""
    if not enabled:
        yield lambda label: None
        return
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
    from rich.console import Console
    console = Console(stderr=True)
    with Progress(TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(),
                  TimeElapsedColumn(), console=console, transient=not console.is_terminal) as bar:
        task = bar.add_task(what, total=total)
        started = [False]

        def advance(label: str) -> None:
            if started[0]:
                bar.advance(task)
            started[0] = True
            bar.update(task, description=f"{what}: {label}")
        yield advance
        bar.update(task, completed=total)


def console():
    """rich falls back to 80 columns when stdout is not a terminal (CI logs); tables need more."""
    from rich.console import Console
    c = Console()
    return c if c.is_terminal else Console(width=160)
