"""Errors that are a user's documentation: what was found, what was expected, and where."""


class TextVisionError(Exception):
    """Base class: the CLI prints the message and exits with status 1, no traceback."""


class ConfigError(TextVisionError, ValueError):
    """A configuration value is missing, of the wrong type or out of range."""


class InputError(TextVisionError, ValueError):
    """An input file is missing, malformed or inconsistent with the step's expectations."""


class OutputError(TextVisionError, OSError):
    """An output cannot be written: a full disk, a read-only or forbidden folder, a file where
    a folder should be."""
