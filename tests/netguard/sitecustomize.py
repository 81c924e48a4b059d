"""Installs the network guard in every Python process the test suite starts."""

from __future__ import annotations

import os

if os.environ.get("SWARMSHARE_NETGUARD_LOG"):
    import swarmshare_netguard

    swarmshare_netguard.install()
