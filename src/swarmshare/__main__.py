"""`python -m swarmshare` runs the command line."""

from __future__ import annotations

from swarmshare.cli import main

if __name__ == "__main__":
    main(complete_var="_SWARMSHARE_COMPLETE")  # the completion scripts call `swarmshare`
