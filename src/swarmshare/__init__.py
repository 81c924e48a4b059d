"""swarmshare: peer-to-peer file sharing for local networks."""

from __future__ import annotations

__version__ = "0.1.0"
