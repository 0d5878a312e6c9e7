"""Exception hierarchy. Each error maps to a process exit code (see ``cli.main``).

Messages say what was wrong, where, and what to do about it.
"""

from __future__ import annotations


class NexlifyError(Exception):
    """Base class of every error Nexlify raises on purpose."""

    exit_code = 1


class ConfigError(NexlifyError, ValueError):
    """A configuration value or command-line option is invalid."""

    exit_code = 2


class DataError(NexlifyError, ValueError):
    """Market data is missing, malformed or inconsistent."""

    exit_code = 3


class CheckpointError(NexlifyError):
    """A checkpoint or model file cannot be read or does not fit."""

    exit_code = 4


class TrainingError(NexlifyError):
    """Training failed in a way that cannot be recovered automatically."""

    exit_code = 5


class InterruptedRunError(NexlifyError):
    """Ctrl-C or SIGTERM stopped a run after saving; ``--resume`` continues it."""

    exit_code = 130
