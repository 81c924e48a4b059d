"""The daemon (composition root), the swarm view, downloads and the control API."""
