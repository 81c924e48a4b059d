"""The transfer log in the original scripts' own line formats (`log --format seed`).

    Upload_log.txt:   cat_3 | 192.168.1.31 | 24-11-2026 14:05:09
    Download_Log.txt: "1764000000.123 | cat_3 | 192.168.1.20 | 24-11-2026 14:05:09"

Only completed transfers are written, as the scripts wrote only those. A native chunk is named
like a seed chunk: the content's name without extension, `_`, the chunk's number from 1.
"""

from __future__ import annotations

import json
import time
from collections.abc import Mapping, Sequence
from pathlib import PurePath
from typing import Any


def seed_log_lines(rows: Sequence[Mapping[str, Any]]) -> tuple[list[str], list[str]]:
    """(upload lines, download lines) for the log rows, oldest first."""
    upload: list[str] = []
    download: list[str] = []
    for row in rows:
        if row["result"] != "ok":
            continue
        label = _label(row)
        when = time.strftime("%d-%m-%Y %H:%M:%S", time.localtime(row["ts"]))
        if row["direction"] == "up":
            upload.append(f"{label} | {row['peer']} | {when}")
        else:
            download.append(json.dumps(f"{row['ts']:.3f} | {label} | {row['peer']} | {when}"))
    return upload, download


def _label(row: Mapping[str, Any]) -> str:
    if row["legacy"]:
        return str(row["name"])
    return f"{PurePath(str(row['name'])).stem}_{int(row['chunk']) + 1}"
