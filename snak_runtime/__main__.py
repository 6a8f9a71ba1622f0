"""``python -m snak_runtime``: the command line (see ``snak_runtime._cli``)."""

from ._cli import main as main

if __name__ == "__main__":
    raise SystemExit(main())
