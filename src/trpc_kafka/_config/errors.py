"""The one error type for bad configuration, from a YAML file or an address string."""

from __future__ import annotations


class ConfigError(ValueError):
    """Bad configuration, raised early: at parse time or at service start.

    The message names the key, the value and what is allowed; ``file`` and ``line`` say where,
    when the configuration came from a file. Secret values are never put into the message.
    """

    def __init__(
        self,
        message: str,
        *,
        key: str | None = None,
        value: str | None = None,
        file: str | None = None,
        line: int | None = None,
    ) -> None:
        self.message = message
        self.key = key
        self.value = value
        self.file = file
        self.line = line
        super().__init__(self._render())

    def _render(self) -> str:
        where = ""
        if self.file is not None:
            where = self.file if self.line is None else f"{self.file}:{self.line}"
            where += ": "
        return where + self.message

    def __str__(self) -> str:
        return self._render()
