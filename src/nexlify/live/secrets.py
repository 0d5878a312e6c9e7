"""API keys for guarded live trading: read from the environment only, never shown anywhere.

The key and secret come from ``NEXLIFY_API_KEY`` and ``NEXLIFY_API_SECRET`` (optionally
``NEXLIFY_API_PASSWORD`` for exchanges that need a passphrase). They are never accepted as
command-line options (shell history, ``ps``) or read from files, never written to the database,
logs or reports, and :func:`redact` removes them from any text before it is logged, stored or
raised (exchange error messages sometimes echo request details).
"""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping

from nexlify.errors import ConfigError

KEY_ENV = "NEXLIFY_API_KEY"
SECRET_ENV = "NEXLIFY_API_SECRET"
PASSWORD_ENV = "NEXLIFY_API_PASSWORD"
MASK = "***"


class Credentials:
    """Exchange API credentials; ``repr``/``str`` never show them."""

    __slots__ = ("_values",)

    def __init__(self, key: str, secret: str, password: str | None = None) -> None:
        self._values = (key, secret, password)

    @classmethod
    def from_environment(cls, environ: Mapping[str, str] | None = None) -> Credentials:
        env = os.environ if environ is None else environ
        key, secret = env.get(KEY_ENV, ""), env.get(SECRET_ENV, "")
        missing = [name for name, v in ((KEY_ENV, key), (SECRET_ENV, secret)) if not v]
        if missing:
            raise ConfigError(
                f"--live needs the API key and secret in the environment variables "
                f"{KEY_ENV} and {SECRET_ENV} (missing: {', '.join(missing)}); keys are never "
                "taken from options or files"
            )
        return cls(key, secret, env.get(PASSWORD_ENV) or None)

    def ccxt_config(self) -> dict[str, str]:
        """The credential part of a ccxt exchange config."""
        key, secret, password = self._values
        config = {"apiKey": key, "secret": secret}
        if password:
            config["password"] = password
        return config

    def secrets(self) -> tuple[str, ...]:
        return tuple(v for v in self._values if v)

    def redact(self, text: str) -> str:
        """``text`` with every credential replaced by ``***``."""
        for value in sorted(self.secrets(), key=len, reverse=True):
            text = text.replace(value, MASK)
        return text

    def __repr__(self) -> str:
        return f"Credentials({MASK})"

    __str__ = __repr__

    def __reduce__(self) -> tuple[object, ...]:
        raise TypeError("Credentials cannot be pickled")


class RedactingFilter(logging.Filter):
    """Logging filter that removes credentials from every record's message and traceback."""

    def __init__(self, credentials: Credentials) -> None:
        super().__init__()
        self.credentials = credentials

    def filter(self, record: logging.LogRecord) -> bool:
        record.msg = self.credentials.redact(record.getMessage())
        record.args = ()
        if record.exc_info:
            formatted = logging.Formatter().formatException(record.exc_info)
            record.exc_text = self.credentials.redact(formatted)
            record.exc_info = None
        return True


def install_redaction(credentials: Credentials, logger: logging.Logger) -> RedactingFilter:
    """Attach a :class:`RedactingFilter` to ``logger`` and to every handler up its chain."""
    flt = RedactingFilter(credentials)
    logger.addFilter(flt)
    current: logging.Logger | None = logger
    while current is not None:
        for handler in current.handlers:
            handler.addFilter(flt)
        current = current.parent if current.propagate else None
    return flt
