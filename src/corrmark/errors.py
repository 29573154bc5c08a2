"""Errors raised by corrmark.

Every error a user can cause (a bad file, a bad value, an unknown name) is a ``CorrmarkError`` whose message is one
line naming the offending file or value; the CLI prints that line instead of a traceback.
"""


class CorrmarkError(Exception):
    """Base class of the errors a user can cause and fix."""


class ImageReadError(CorrmarkError, ValueError):
    """An image could not be read (missing, empty, truncated, not an image) or has an unusable shape."""


class InvalidKeypointsError(CorrmarkError, ValueError):
    """Keypoints that are NaN, of the wrong shape, or outside the image they belong to."""


class DatasetError(CorrmarkError, FileNotFoundError):
    """A dataset root or annotation file is missing, incomplete or malformed."""


class UnknownNameError(CorrmarkError, KeyError):
    """An unknown backbone, matcher, dataset or option name."""

    def __str__(self) -> str:  # KeyError would quote the message
        return str(self.args[0]) if self.args else ""


class CheckpointError(CorrmarkError, RuntimeError):
    """A checkpoint that is missing, unreadable or does not match the model it is loaded into."""


class OutputError(CorrmarkError, OSError):
    """An output location that cannot be written (a file where a folder is wanted, a read-only folder, ...),
    detected before the work starts."""
