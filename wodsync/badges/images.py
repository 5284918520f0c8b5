"""A drawn image for a badge the catalog gives none (and for every special badge): a medal
with the badge's title, SVG, so a page and an assertion always have an image."""

from __future__ import annotations

from xml.sax.saxutils import escape

COLOURS = {"workshop": ("#01a982", "#005e4a"), "special": ("#f5b700", "#8a6400")}


def medal_svg(title: str, kind: str) -> str:
    fill, ring = COLOURS.get(kind, COLOURS["workshop"])
    words = title.split()
    lines = [" ".join(words[i:i + 2]) for i in range(0, min(len(words), 6), 2)] or [""]
    start = 100 - 11 * (len(lines) - 1)
    text = "".join(
        f'<text x="100" y="{start + 22 * n}" font-family="sans-serif" font-size="16" '
        f'fill="#ffffff" text-anchor="middle">{escape(line[:24])}</text>'
        for n, line in enumerate(lines))
    return (f'<svg xmlns="http://www.w3.org/2000/svg" width="200" height="200" '
            f'viewBox="0 0 200 200" role="img" aria-label="{escape(title, {chr(34): "&quot;"})}">'
            f'<circle cx="100" cy="100" r="94" fill="{ring}"/>'
            f'<circle cx="100" cy="100" r="82" fill="{fill}"/>{text}</svg>')
