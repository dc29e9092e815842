"""The project's errors: one base class, so a caller can catch them all.

The command line turns each into a one-line message and an exit status
(README, "Exit status").
"""

__all__ = ["ClassifierError", "ModelLoadError", "ModelVersionWarning", "DataError", "BatchError"]


class ClassifierError(Exception):
    """Base class of every error this package raises on purpose."""

    #: The command line's exit status for this error.
    exit_code = 2


class ModelLoadError(ClassifierError):
    """A model directory that cannot be used, and why."""


class DataError(ClassifierError, ValueError):
    """Labelled data that cannot be trained or evaluated on: file, line and reason."""


class BatchError(ClassifierError):
    """A batch invocation that cannot run (bad arguments, unreadable inputs, an output that is an input)."""


class ModelVersionWarning(UserWarning):
    """A library version outside the range the project is tested with."""
