"""The CLI's side of the control API: find the running daemon of a home and call it."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from swarmshare.app.home import ControlInfo, read_control_file
from swarmshare.errors import AmbiguousError, DaemonError, NotFoundError, UsageError

CONTROL_HOST = "127.0.0.1"


class ControlClient:
    """Calls a running daemon's control API (blocking; for the CLI)."""

    def __init__(self, info: ControlInfo) -> None:
        self.info = info

    @classmethod
    def find(cls, home: Path) -> ControlClient | None:
        """The client of the daemon running for `home`, or None when none runs."""
        info = read_control_file(home)
        return cls(info) if info is not None else None

    def get(self, path: str, timeout: float = 30.0) -> Any:
        """GET /api/PATH and return its JSON."""
        return self.request("GET", path, None, timeout)

    def post(self, path: str, body: object, timeout: float = 600.0) -> Any:
        """POST JSON to /api/PATH and return its JSON."""
        return self.request("POST", path, body, timeout)

    def request(self, method: str, path: str, body: object, timeout: float) -> Any:
        """One call; DaemonError if the daemon cannot be reached, UsageError if it refuses."""
        import http.client  # here, not at start: a command without a daemon never calls one

        conn = http.client.HTTPConnection(CONTROL_HOST, self.info.port, timeout=timeout)
        payload = None if body is None else json.dumps(body).encode()
        headers = {"Authorization": f"Bearer {self.info.token}"}
        if payload is not None:
            headers["Content-Type"] = "application/json"
        try:
            conn.request(method, "/api/" + path, body=payload, headers=headers)
            resp = conn.getresponse()
            raw = resp.read()
        except (OSError, http.client.HTTPException) as exc:
            raise DaemonError(
                f"the swarmshare daemon (pid {self.info.pid}) is not answering: {exc}"
            ) from None
        finally:
            conn.close()
        try:
            data = json.loads(raw) if raw else None
        except ValueError:
            raise DaemonError("the daemon sent a reply that is not JSON") from None
        if resp.status >= 400:
            error = (data or {}).get("error", {}) if isinstance(data, dict) else {}
            message = str(error.get("message", f"HTTP {resp.status}"))
            if error.get("code") == "ambiguous":
                raise AmbiguousError(message, list(error.get("candidates", [])))
            if error.get("code") == "not_found":
                raise NotFoundError(message)
            raise UsageError(message)
        return data
