"""``python -m snak_runtime``: the command line (see ``snak_runtime.tools._cli``)."""

from .tools._cli import main as main

if __name__ == "__main__":
    raise SystemExit(main())
