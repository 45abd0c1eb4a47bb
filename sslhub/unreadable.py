"""Samples whose files fail to decode at read time: skip them, name them, give up past a share."""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import TypeVar

from sslhub.errors import SSLHubError

log = logging.getLogger("sslhub")

T = TypeVar("T")

#: above this share of a data set's files failing to decode, training stops instead of skipping.
MAX_UNREADABLE_SHARE = 0.1
#: how many unreadable files the final error names before it only counts them.
NAMED_FILES = 10


class UnreadableFiles:
    """Reads samples of a file-backed dataset, skipping files that fail to decode.

    A file that fails is named in a warning (once) and the next index is read instead, so one
    truncated file never stops training; once more than ``max_share`` of the ``total`` files
    (and more than one) have failed, :meth:`read` raises an :class:`SSLHubError` naming them. Picklable, so each
    DataLoader worker keeps its own count (each sees a share of the files).

    Args:
        total: files in the dataset.
        what: what a file holds, for messages (``"image"``, ``"audio file"``).
        max_share: share of ``total`` that may fail before giving up.
    """

    def __init__(self, total: int, what: str, max_share: float = MAX_UNREADABLE_SHARE):
        self.total, self.what, self.max_share = total, what, max_share
        self.failed: dict[str, str] = {}
        #: failures tolerated: the share of the files, but always one (a tiny data set may lose one file).
        self.allowed = max(1.0, max_share * total)

    def read(self, index: int, path_of: Callable[[int], str], decode: Callable[[int], T]) -> tuple[int, T]:
        """``(index read, decoded sample)``: ``decode(index)``, or of the next index whose file decodes.

        Raises:
            SSLHubError: more than ``max_share`` of the files failed to decode.
        """
        for attempt in range(self.total):
            current = (index + attempt) % self.total
            try:
                return current, decode(current)
            except Exception as error:  # noqa: BLE001 - decoders raise many kinds for a bad file; all mean "skip"
                self._record(path_of(current), error)
        raise self._give_up()

    def _record(self, path: str, error: Exception) -> None:
        if path not in self.failed:
            self.failed[path] = f"{type(error).__name__}: {error}"
            log.warning("skipping unreadable %s %s (%s); using the next one instead", self.what, path, error)
        if len(self.failed) > self.allowed:
            raise self._give_up()

    def _give_up(self) -> SSLHubError:
        named = "\n".join(f"  {path}: {reason}" for path, reason in list(self.failed.items())[:NAMED_FILES])
        more = f"\n  ... and {len(self.failed) - NAMED_FILES} more" if len(self.failed) > NAMED_FILES else ""
        return SSLHubError(
            f"{len(self.failed)} of {self.total} {self.what}s failed to decode, more than the "
            f"{self.max_share:.0%} that training skips; fix or remove them:\n{named}{more}"
        )
