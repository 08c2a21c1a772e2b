"""Errors meant for the user: each message names the problem and, where it can, the fix.

Every error the library raises on purpose derives from `AlignSamError`, so the command line and the
service can print the message without a traceback and keep going where that makes sense.
"""

from __future__ import annotations


class AlignSamError(Exception):
    """Base class of the errors that carry a message for the user.

    `exit_code` is what the command line exits with: 1 (the work could not be done) unless the user's own
    request is at fault (2, a usage error, as for options argparse refuses).
    """

    exit_code = 1


class ModelNotFoundError(AlignSamError, FileNotFoundError):
    """A model id or path could not be resolved (not a local path, not cached, hub unreachable)."""


class CheckpointError(AlignSamError, ValueError):
    """A checkpoint could not be read, or its tensors do not fit the model (missing, unexpected, shape)."""


class ConfigError(AlignSamError, ValueError):
    """A configuration value is invalid."""


class ImageError(AlignSamError, ValueError):
    """An image could not be read or is unusable (empty, corrupt, not an image, too large)."""


class PromptError(AlignSamError, ValueError):
    """A SAM prompt is invalid (empty, malformed point, box or mask); a usage error on the command line."""

    exit_code = 2


class InputError(AlignSamError, ValueError):
    """Any other invalid input: an empty label list, an empty text list, a bad argument value."""


class UsageError(InputError):
    """Options that do not go together or miss their partner (the command line exits 2, as for argparse)."""

    exit_code = 2


class OutputError(AlignSamError, OSError):
    """A result could not be written where the user asked (a folder, a read-only place, a full disk)."""


class MissingDependencyError(AlignSamError, ImportError):
    """An optional package a feature needs is not installed; the message names the extra to install."""
