"""Progress of the direction tasks: a tqdm bar on a terminal, log lines otherwise.

:func:`track` consumes ``distributed.as_completed`` and advances a :class:`Progress` by the
number of directions each finished task carried, so the bar counts directions (done/total,
rate, ETA), including those already finished by an interrupted earlier run.
"""

from __future__ import annotations

import logging
import sys
import time
from collections.abc import Iterable, Iterator
from typing import IO, Any

__all__ = ["Progress", "track"]

log = logging.getLogger(__name__)


class Progress:
    """Directions done out of a total, shown as a bar (TTY) or periodic log lines.

    Parameters
    ----------
    total
        Number of directions.
    initial
        Directions already done before this run started (resume).
    stream
        Where the bar goes (default stderr).
    bar
        Force the bar on or off; default: on when ``stream`` is a terminal.
    log_every
        Minimum seconds between log lines when there is no bar (the last line is always
        written).
    desc
        Label of the bar.
    """

    def __init__(
        self,
        total: int,
        initial: int = 0,
        *,
        stream: IO[str] | None = None,
        bar: bool | None = None,
        log_every: float = 10.0,
        desc: str = "directions",
    ) -> None:
        self.total = int(total)
        self.done = int(initial)
        self.initial = int(initial)
        self.stream = stream if stream is not None else sys.stderr
        self.log_every = float(log_every)
        self.desc = desc
        self._t0 = time.monotonic()
        self._last_log = -float("inf")
        if bar is None:
            isatty = getattr(self.stream, "isatty", None)
            bar = bool(isatty and isatty())
        self._bar: Any = None
        if bar:
            from tqdm import tqdm

            self._bar = tqdm(
                total=self.total,
                initial=self.initial,
                desc=desc,
                unit="dir",
                file=self.stream,
                dynamic_ncols=True,
            )
        elif self.initial:
            log.info("%s: %d/%d already done", self.desc, self.initial, self.total)

    def eta(self) -> float | None:
        """Seconds left at the current rate (``None`` before the first completion)."""
        new = self.done - self.initial
        if new <= 0:
            return None
        rate = new / max(time.monotonic() - self._t0, 1e-9)
        return (self.total - self.done) / rate

    def update(self, n: int = 1) -> None:
        """Count ``n`` more directions as done."""
        self.done += int(n)
        if self._bar is not None:
            self._bar.update(int(n))
            return
        now = time.monotonic()
        if now - self._last_log >= self.log_every or self.done >= self.total:
            self._last_log = now
            eta = self.eta()
            eta_text = f", ETA {_fmt_seconds(eta)}" if eta is not None else ""
            log.info(
                "%s: %d/%d done (%.0f%%)%s",
                self.desc,
                self.done,
                self.total,
                100.0 * self.done / max(self.total, 1),
                eta_text,
            )

    def close(self) -> None:
        """Close the bar."""
        if self._bar is not None:
            self._bar.close()
            self._bar = None

    def __enter__(self) -> Progress:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _fmt_seconds(seconds: float) -> str:
    seconds = max(0, round(seconds))
    h, rem = divmod(seconds, 3600)
    m, s = divmod(rem, 60)
    return f"{h:d}:{m:02d}:{s:02d}" if h else f"{m:d}:{s:02d}"


def track(futures: Iterable[Any], progress: Progress) -> Iterator[Any]:
    """Yield the results of direction-task futures as they finish, advancing ``progress``.

    Each result must be a mapping with ``"indices"`` (the directions it computed). A failed
    task raises its exception here.
    """
    from distributed import as_completed

    futures = list(futures)
    if not futures:
        return
    for future in as_completed(futures):
        result = future.result()
        progress.update(len(result.get("indices", ())) if isinstance(result, dict) else 1)
        yield result
