"""Error hierarchy of l2_tactical.

Every error raised for bad external input is an :class:`L2Error`; the CLI turns
them into a one-line message on stderr and a meaningful exit code, never a
traceback.
"""

from __future__ import annotations


class L2Error(Exception):
    """Base class of every error this project raises on purpose."""

    exit_code = 1


class ConfigError(L2Error):
    """A configuration file or environment variable is invalid."""

    exit_code = 3


class DataError(L2Error):
    """Input data is unusable.

    ``file``, ``row`` (1-based data row, header excluded, or a line number when
    ``line`` is given) and ``column`` locate the defect; the message says what
    is wrong and with which value.

    >>> str(DataError("high < low (high=1.0, low=2.0)", file="x.csv", row=3, column="high"))
    'x.csv: row 3, column high: high < low (high=1.0, low=2.0)'
    """

    exit_code = 4

    def __init__(
        self,
        message: str,
        *,
        file: str | None = None,
        row: int | None = None,
        column: str | None = None,
        line: int | None = None,
    ) -> None:
        self.message = message
        self.file = file
        self.row = row
        self.column = column
        self.line = line
        super().__init__(self._render())

    def _render(self) -> str:
        where = []
        if self.line is not None:
            where.append(f"line {self.line}")
        if self.row is not None:
            where.append(f"row {self.row}")
        if self.column is not None:
            where.append(f"column {self.column}")
        loc = ", ".join(where)
        prefix = f"{self.file}: " if self.file else ""
        return f"{prefix}{loc}: {self.message}" if loc else f"{prefix}{self.message}"


class ModelIntegrityError(L2Error):
    """A model file failed its hash, format or FeatureSet check; nothing was unpickled."""

    exit_code = 5


class TransientError(L2Error):
    """A temporary failure (network, bus, exchange) worth retrying with backoff."""

    exit_code = 6
