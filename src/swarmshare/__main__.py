"""`python -m swarmshare` runs the command line."""

from __future__ import annotations

from swarmshare.cli import main

if __name__ == "__main__":
    main()
