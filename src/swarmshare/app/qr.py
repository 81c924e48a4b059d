"""QR codes of this peer's LAN page address: for a terminal (`status --qr`) and for the page.

Made with segno (pure Python). The terminal form draws two rows of modules per line with
Unicode half blocks, light modules (and the quiet zone) as ink, so that on a dark terminal the
code reads as dark on light; phone cameras read either way round.
"""

from __future__ import annotations

import io

import segno

QUIET_ZONE_MODULES = 2


def qr_text(text: str) -> str:
    """`text` as a QR code in Unicode half blocks, one string of lines."""
    rows = [
        list(row)
        for row in segno.make(text, error="m", micro=False).matrix_iter(
            scale=1, border=QUIET_ZONE_MODULES
        )
    ]
    if len(rows) % 2:
        rows.append([0] * len(rows[0]))
    lines = []
    for top, bottom in zip(rows[::2], rows[1::2], strict=True):
        # ink where the module is light: "█" both, "▀" the upper, "▄" the lower one
        line = "".join(
            " " if t and b else "▄" if t else "▀" if b else "█"
            for t, b in zip(top, bottom, strict=True)
        )
        lines.append(line)
    return "\n".join(lines)


def qr_svg(text: str) -> bytes:
    """`text` as a QR code in SVG (dark on white)."""
    out = io.BytesIO()
    segno.make(text, error="m", micro=False).save(
        out, kind="svg", scale=6, border=QUIET_ZONE_MODULES, xmldecl=False, title="LAN page address"
    )
    return out.getvalue()
