"""`python -m gatelab` (also what `torchrun -m gatelab` runs)."""

from gatelab.cli import main

if __name__ == "__main__":
    raise SystemExit(main())
