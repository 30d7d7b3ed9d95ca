"""Typed errors. Every error matcher raises on purpose is a :class:`MatcherError`."""

from __future__ import annotations


class MatcherError(Exception):
    """Base class of every matcher error."""


class InputError(MatcherError, ValueError):
    """An argument has the wrong type, shape, dtype or value."""


class ImageDecodeError(InputError):
    """Bytes or a file could not be decoded as an image."""


class ImageTooLargeError(InputError):
    """An image exceeds the configured pixel limit."""


class NoFaceError(MatcherError):
    """No face was found where one was required."""


class ModelError(MatcherError):
    """A model is missing, does not match its card, or cannot be loaded or run."""


class ModelMismatchError(MatcherError):
    """Two templates (or a template and a gallery) come from different models."""


class TemplateError(InputError):
    """A template vector or serialised template is malformed."""
