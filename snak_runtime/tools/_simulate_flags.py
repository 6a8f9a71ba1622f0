"""Which ``simulate`` flags a run was given, and the combinations that cannot mean anything.

A flag that a run ignores is worse than an error: ``--agents 5`` beside ``--trace`` used to be
dropped silently while the summary still spoke of "the 5 returning agents".
"""

from __future__ import annotations

import argparse
from collections.abc import Sequence
from typing import Any

from ._simulate_params import PARAMETERS

# What the Zipf workload is made of: a trace replaces all of it (it names its own agents,
# users and arrivals). ``--requests`` still applies: it replays the trace's first N lines.
SYNTHETIC_ONLY = ("--agents", "--zipf", "--one-time", "--users", "--burst-agents",
                  "--burst-rate", "--deploy")


class Given(argparse.Action):
    """Stores the value as ``store`` does, and records the flag in ``namespace.given``."""

    def __call__(
        self,
        parser: argparse.ArgumentParser,
        namespace: argparse.Namespace,
        values: str | Sequence[Any] | None,
        option_string: str | None = None,
    ) -> None:
        setattr(namespace, self.dest, values)
        given: set[str] = getattr(namespace, "given", None) or set()
        given.add(self.option_strings[0])
        namespace.given = given


def given(args: argparse.Namespace) -> set[str]:
    """The flags given on the command line (a ``Given`` flag at its default value counts)."""
    flags: set[str] = getattr(args, "given", None) or set()
    return flags


def conflict(args: argparse.Namespace) -> str | None:
    """The usage error of a combination of flags, or None when they all apply."""
    flags = given(args)
    if args.trace is not None:
        ignored = [flag for flag in SYNTHETIC_ONLY if flag in flags]
        if ignored:
            return (f"{', '.join(ignored)} cannot be used with --trace: the trace names its "
                    "agents, users and arrivals (--requests replays its first N requests)")
    if args.sizes is not None and "--max-entries" in flags:
        return "--max-entries cannot be used with --sizes: each size is a max_entries"
    return None


MAX_SIZES = 32


def sizes(text: str) -> list[int]:
    """``--sizes 16,64,256``: each a valid --max-entries, at most ``MAX_SIZES`` of them."""
    parameter = PARAMETERS["max_entries"]
    parts = [part.strip() for part in text.split(",") if part.strip()]
    if not parts or len(parts) > MAX_SIZES:
        raise argparse.ArgumentTypeError(f"1 to {MAX_SIZES} sizes, got {text!r}")
    try:
        return sorted({int(parameter.parse(part)) for part in parts})
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None
