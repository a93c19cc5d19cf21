"""Progress for long work: a tqdm bar on a terminal, a plain line every few seconds anywhere else.

A bar redraws itself with carriage returns; written to a log file those redraws pile up on one line (a
5,000-document build left one 29 kB line of ~470 redraws). When stderr is not a terminal, :class:`LineProgress`
prints a whole line at most every :data:`LINE_SECONDS` seconds instead.
"""

from __future__ import annotations

import sys
import time
from typing import Any

LINE_SECONDS = 5.0


def progress_bar(desc: str, *, total: int | None = None, unit: str = "it", enabled: bool = True,
                 leave: bool = True) -> Any:
    """A progress counter with ``update(n)``, used as a context manager. ``unit="B"`` counts bytes (shown in
    kB/MB/GB); with a ``total`` it shows the share done and an ETA."""
    if not enabled:
        return LineProgress(desc, total=total, unit=unit, enabled=False)
    if sys.stderr.isatty():
        from tqdm.auto import tqdm

        scale = unit == "B"
        return tqdm(total=total, desc=desc, unit=unit, unit_scale=scale, unit_divisor=1000, leave=leave,
                    file=sys.stderr)
    return LineProgress(desc, total=total, unit=unit)


class LineProgress:
    """``desc: 12.3 MB of 45.6 MB (27%), 1.2 MB/s, ETA 0:00:27``, printed at most every ``interval`` seconds,
    and once more at the end when anything was printed before."""

    def __init__(self, desc: str, *, total: int | None = None, unit: str = "it", enabled: bool = True,
                 interval: float = LINE_SECONDS, file: Any = None):
        self.desc, self.total, self.unit, self.enabled, self.interval = desc, total, unit, enabled, interval
        self.file = file or sys.stderr
        self.n = 0
        self._start = self._last = time.monotonic()
        self._printed = False

    def update(self, n: int = 1) -> None:
        self.n += n
        now = time.monotonic()
        if self.enabled and now - self._last >= self.interval:
            self._last = now
            self._print(now)

    def line(self, now: float | None = None) -> str:
        elapsed = max((now or time.monotonic()) - self._start, 1e-9)
        rate = self.n / elapsed
        text = f"{self.desc}: {self._amount(self.n)}"
        if self.total:
            text += f" of {self._amount(self.total)} ({100 * self.n / self.total:.0f}%)"
        text += f", {self._amount(rate)}/s"
        if self.total and rate > 0 and self.n < self.total:
            text += f", ETA {_clock((self.total - self.n) / rate)}"
        return text + f", {_clock(elapsed)} elapsed"

    def _amount(self, n: float) -> str:
        if self.unit != "B":
            return f"{n:,.0f}{self.unit if self.unit.startswith(' ') else ' ' + self.unit}"
        for unit, size in (("GB", 1e9), ("MB", 1e6), ("kB", 1e3)):
            if n >= size:
                return f"{n / size:,.1f} {unit}"
        return f"{n:,.0f} B"

    def _print(self, now: float) -> None:
        print(self.line(now), file=self.file, flush=True)
        self._printed = True

    def close(self) -> None:
        if self.enabled and self._printed:
            self._print(time.monotonic())
            self._printed = False

    def __enter__(self) -> "LineProgress":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()


def _clock(seconds: float) -> str:
    s = int(seconds)
    return f"{s // 3600}:{s % 3600 // 60:02d}:{s % 60:02d}"
