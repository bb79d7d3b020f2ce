"""A drill's PNG timeline: calls per second and errors per region, fault window shaded.

Drawn without a plotting library (the project adds no dependency for one picture): an
RGB canvas, a 3x5 pixel font, and a PNG writer (zlib + CRC from the standard library).

    one lane per region (and "unknown"): green = successful calls per second,
    red = failed calls per second stacked on top; a last lane: the worst replication
    lag any region reported, per second (or why there is none); the fault window is
    shaded pink, numbered vertical lines mark events, listed under the lanes.
"""

from __future__ import annotations

import math
import struct
import zlib
from collections.abc import Callable, Sequence
from pathlib import Path

from meridian.cli.drill.report import DrillResult

__all__ = ["Canvas", "render", "write_png"]

WIDTH = 1000
LEFT = 150
RIGHT = 20
TOP = 56
LANE = 70
SCALE = 2
BACKGROUND = (255, 255, 255)
INK = (30, 30, 30)
GRID = (225, 225, 225)
SHADE = (255, 225, 225)
OK = (60, 170, 80)
ERROR = (220, 50, 50)
EVENT = (90, 90, 200)
LAG = (230, 150, 30)

_GLYPHS: dict[str, tuple[str, ...]] = {
    "0": ("111", "101", "101", "101", "111"),
    "1": ("010", "110", "010", "010", "111"),
    "2": ("111", "001", "111", "100", "111"),
    "3": ("111", "001", "111", "001", "111"),
    "4": ("101", "101", "111", "001", "001"),
    "5": ("111", "100", "111", "001", "111"),
    "6": ("111", "100", "111", "101", "111"),
    "7": ("111", "001", "001", "001", "001"),
    "8": ("111", "101", "111", "101", "111"),
    "9": ("111", "101", "111", "001", "111"),
    "A": ("010", "101", "111", "101", "101"),
    "B": ("110", "101", "110", "101", "110"),
    "C": ("011", "100", "100", "100", "011"),
    "D": ("110", "101", "101", "101", "110"),
    "E": ("111", "100", "110", "100", "111"),
    "F": ("111", "100", "110", "100", "100"),
    "G": ("011", "100", "101", "101", "011"),
    "H": ("101", "101", "111", "101", "101"),
    "I": ("111", "010", "010", "010", "111"),
    "J": ("001", "001", "001", "101", "010"),
    "K": ("101", "101", "110", "101", "101"),
    "L": ("100", "100", "100", "100", "111"),
    "M": ("101", "111", "111", "101", "101"),
    "N": ("110", "101", "101", "101", "101"),
    "O": ("010", "101", "101", "101", "010"),
    "P": ("110", "101", "110", "100", "100"),
    "Q": ("010", "101", "101", "110", "011"),
    "R": ("110", "101", "110", "101", "101"),
    "S": ("011", "100", "010", "001", "110"),
    "T": ("111", "010", "010", "010", "010"),
    "U": ("101", "101", "101", "101", "111"),
    "V": ("101", "101", "101", "101", "010"),
    "W": ("101", "101", "111", "111", "101"),
    "X": ("101", "101", "010", "101", "101"),
    "Y": ("101", "101", "010", "010", "010"),
    "Z": ("111", "001", "010", "100", "111"),
    " ": ("000", "000", "000", "000", "000"),
    "-": ("000", "000", "111", "000", "000"),
    ".": ("000", "000", "000", "000", "010"),
    ":": ("000", "010", "000", "010", "000"),
    "/": ("001", "001", "010", "100", "100"),
    "(": ("010", "100", "100", "100", "010"),
    ")": ("010", "001", "001", "001", "010"),
    "%": ("101", "001", "010", "100", "101"),
    "_": ("000", "000", "000", "000", "111"),
    "+": ("000", "010", "111", "010", "000"),
    "=": ("000", "111", "000", "111", "000"),
    ",": ("000", "000", "000", "010", "100"),
    "?": ("111", "001", "010", "000", "010"),
    ">": ("100", "010", "001", "010", "100"),
    "<": ("001", "010", "100", "010", "001"),
}

Color = tuple[int, int, int]


class Canvas:
    def __init__(self, width: int, height: int) -> None:
        self.width = width
        self.height = height
        self.pixels = bytearray(bytes(BACKGROUND) * (width * height))

    def rect(self, x0: int, y0: int, x1: int, y1: int, color: Color) -> None:
        """Fill [x0, x1) x [y0, y1), clipped to the canvas."""
        x0, x1 = max(0, min(x0, x1)), min(self.width, max(x0, x1))
        y0, y1 = max(0, min(y0, y1)), min(self.height, max(y0, y1))
        if x0 >= x1:
            return
        row = bytes(color) * (x1 - x0)
        for y in range(y0, y1):
            start = (y * self.width + x0) * 3
            self.pixels[start : start + len(row)] = row

    def text(self, x: int, y: int, text: str, color: Color = INK) -> None:
        """Draw `text` (upper case), cut off at the canvas's right edge."""
        room = max(0, (self.width - x) // (4 * SCALE))
        for character in text.upper()[:room]:
            glyph = _GLYPHS.get(character, _GLYPHS["?"])
            for row, bits in enumerate(glyph):
                for column, bit in enumerate(bits):
                    if bit == "1":
                        px, py = x + column * SCALE, y + row * SCALE
                        self.rect(px, py, px + SCALE, py + SCALE, color)
            x += 4 * SCALE

    def png(self) -> bytes:
        raw = b"".join(
            b"\x00" + bytes(self.pixels[y * self.width * 3 : (y + 1) * self.width * 3])
            for y in range(self.height)
        )
        header = struct.pack(">IIBBBBB", self.width, self.height, 8, 2, 0, 0, 0)
        return b"\x89PNG\r\n\x1a\n" + b"".join(
            _chunk(kind, data)
            for kind, data in ((b"IHDR", header), (b"IDAT", zlib.compress(raw, 9)), (b"IEND", b""))
        )


def _chunk(kind: bytes, data: bytes) -> bytes:
    crc = zlib.crc32(kind + data) & 0xFFFFFFFF
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", crc)


def _bins(
    result: DrillResult, lanes: Sequence[str], bin_s: float
) -> dict[str, list[tuple[int, int]]]:
    count = max(1, math.ceil(result.duration_s / bin_s))
    bins = {lane: [(0, 0)] * count for lane in lanes}
    for record in result.records:
        lane = record.region or "unknown"
        index = min(count - 1, int(record.started_s / bin_s))
        ok, failed = bins[lane][index]
        bins[lane][index] = (ok + record.ok, failed + (not record.ok))
    return bins


def render(result: DrillResult) -> Canvas:
    lanes = sorted({record.region or "unknown" for record in result.records})
    events = list(result.events)
    height = TOP + LANE * (max(1, len(lanes)) + 1) + 40 + 14 * (len(events) + 3)
    canvas = Canvas(WIDTH, height)
    duration_s = max(result.duration_s, 1.0)
    bin_s = max(0.5, duration_s / 120)
    plot_width = WIDTH - LEFT - RIGHT

    def x_of(seconds: float) -> int:
        return LEFT + int(plot_width * seconds / duration_s)

    canvas.text(10, 8, f"drill {result.name} (target {result.target}): calls/s per region")
    canvas.text(10, 22, "green = ok, red = failed, pink = fault window", (110, 110, 110))
    bottom = TOP + LANE * (len(lanes) + 1)
    if result.fault_window is not None:
        canvas.rect(x_of(result.fault_window[0]), TOP, x_of(result.fault_window[1]), bottom, SHADE)
    bins = _bins(result, lanes, bin_s)
    bar = max(1, int(plot_width * bin_s / duration_s) - 1)
    for number, lane in enumerate(lanes):
        base = TOP + LANE * (number + 1) - 4
        # Each lane has its own scale, so a quiet region's calls stay visible.
        peak = max((ok + failed for ok, failed in bins[lane]), default=1) or 1
        canvas.rect(LEFT, base, WIDTH - RIGHT, base + 1, GRID)
        canvas.text(10, base - 36, lane)
        canvas.text(10, base - 22, f"peak {peak / bin_s:.0f}/s", (110, 110, 110))
        for index, (ok, failed) in enumerate(bins[lane]):
            x = x_of(index * bin_s)
            ok_height = int((LANE - 12) * ok / peak)
            failed_height = int((LANE - 12) * failed / peak)
            canvas.rect(x, base - ok_height, x + bar, base, OK)
            canvas.rect(x, base - ok_height - failed_height, x + bar, base - ok_height, ERROR)
    _lag_lane(canvas, result, TOP + LANE * (len(lanes) + 1) - 4, bin_s, bar, x_of)
    for number, event in enumerate(events, start=1):
        x = x_of(event.at_s)
        canvas.rect(x, TOP, x + 1, bottom, EVENT)
        canvas.text(x + 3, TOP - 12, str(number), EVENT)
    step_s = next(s for s in (1, 2, 5, 10, 20, 30, 60, 120, 300, 600) if duration_s / s <= 12)
    for tick in range(0, int(duration_s) + 1, step_s):
        canvas.rect(x_of(tick), bottom, x_of(tick) + 1, bottom + 4, INK)
        canvas.text(x_of(tick) - 4, bottom + 8, f"{tick}s")
    y = bottom + 30
    for number, event in enumerate(events, start=1):
        canvas.text(LEFT, y, f"{number}: {event.at_s:.1f}s {event.label}", EVENT)
        y += 14
    verification = result.verification
    if verification is not None:
        lag = "n/a" if verification.convergence_s is None else f"{verification.convergence_s:.2f}s"
        canvas.text(LEFT, y, f"converged after heal: {lag}")
        canvas.text(LEFT, y + 14, verification.convergence_note, (110, 110, 110))
    return canvas


def _lag_lane(
    canvas: Canvas,
    result: DrillResult,
    base: int,
    bin_s: float,
    bar: int,
    x_of: Callable[[float], int],
) -> None:
    canvas.rect(LEFT, base, WIDTH - RIGHT, base + 1, GRID)
    canvas.text(10, base - 36, "replication lag")
    if not result.lag_samples:
        canvas.text(LEFT + 6, base - 30, f"not sampled: {result.lag_note or 'no samples'}", LAG)
        return
    worst: dict[int, float] = {}
    for sample in result.lag_samples:
        index = int(sample.at_s / bin_s)
        worst[index] = max(worst.get(index, 0.0), sample.lag_s)
    peak = max(worst.values()) or 1.0
    canvas.text(10, base - 22, f"peak {peak:.2f}s", (110, 110, 110))
    for index, lag_s in worst.items():
        height = int((LANE - 12) * lag_s / peak)
        canvas.rect(
            x_of(index * bin_s), base - max(1, height), x_of(index * bin_s) + bar, base, LAG
        )


def write_png(result: DrillResult, path: Path) -> None:
    path.write_bytes(render(result).png())
