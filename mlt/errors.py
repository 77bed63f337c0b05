"""Errors a user can act on, and the counted skips of ``--skip-bad``.

Every problem with user input is reported as a :class:`InputError` naming the file, the field
and the value, and what was expected. Readers that accept ``skip_bad`` hand such errors to a
:class:`SkipLog` instead of raising, which logs and counts them.
"""

from __future__ import annotations

import logging
from collections import Counter
from dataclasses import dataclass, field
from os import PathLike
from typing import Any

log = logging.getLogger("mlt")


class MltError(Exception):
    """Base of every error mlt raises on purpose; the CLI prints these without a traceback."""


class InputError(MltError, ValueError):
    """Bad user input: names the file, the field, the offending value and what was expected."""

    def __init__(
        self,
        file: str | PathLike | None,
        field: str | None,
        value: Any,
        expected: str,
        *,
        kind: str = "bad input",
    ) -> None:
        self.file = str(file) if file is not None else None
        self.field = field
        self.value = value
        self.expected = expected
        self.kind = kind
        super().__init__(self._format())

    def __reduce__(self):
        # Picklable (Ray ships errors between processes), keeping the message as it was.
        return (
            _rebuild,
            (type(self), self.file, self.field, self.value, self.expected, self.kind, self.args),
        )

    def _format(self) -> str:
        where = self.file or "<input>"
        parts = [where]
        if self.field:
            parts.append(f"field '{self.field}'")
        head = ": ".join(parts)
        value = _short(self.value)
        return f"{head}: {self.kind}: got {value}; expected {self.expected}"


def _rebuild(cls: type, file, field, value, expected, kind, args) -> InputError:
    """Returns an InputError rebuilt from its parts (the pickling path)."""
    err = cls(file, field, value, expected, kind=kind)
    err.args = args
    return err


def _short(value: Any, limit: int = 120) -> str:
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."


@dataclass
class SkipLog:
    """Collects the input errors skipped under ``--skip-bad``: logs each one, counts them by kind.

    ``handle(err)`` raises ``err`` when skipping is off and records it otherwise.
    """

    enabled: bool = False
    errors: list[InputError] = field(default_factory=list)

    def handle(self, err: InputError) -> None:
        """Raises ``err`` unless skipping is enabled; otherwise logs and records it (returns None)."""
        if not self.enabled:
            raise err
        log.warning("skipped: %s", err)
        self.errors.append(err)

    @property
    def count(self) -> int:
        """Returns how many inputs were skipped."""
        return len(self.errors)

    def by_kind(self) -> Counter:
        """Returns a Counter of skipped inputs by error kind."""
        return Counter(e.kind for e in self.errors)

    def summary(self) -> str:
        """Returns a one-line summary such as ``"3 skipped (2 missing image, 1 bad box)"``."""
        if not self.errors:
            return "0 skipped"
        kinds = ", ".join(f"{n} {k}" for k, n in sorted(self.by_kind().items()))
        return f"{self.count} skipped ({kinds})"
