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


class TemplateFormatError(TemplateError):
    """Serialised template bytes are corrupt, truncated, of an unknown version or encoding."""


class SealError(MatcherError):
    """A sealed template (QR code / card payload) could not be opened."""


class SealFormatError(SealError, InputError):
    """The sealed blob or its text form is malformed (not a sealed template at all)."""


class WrongKeyError(SealError):
    """The blob was sealed with a different key than the one given."""


class TamperedError(SealError):
    """The blob's authenticated data or ciphertext was altered."""


class ExpiredError(SealError):
    """The sealed template is past its expiry time."""


class CalibrationError(MatcherError):
    """No calibrated operating point exists for the requested model and target rate."""


class GalleryFileError(MatcherError):
    """A saved gallery file is truncated, corrupt, of an unknown version, or not as required."""


class DocumentError(InputError):
    """A travel-document data group (e.g. ICAO 9303 DG2 from an e-passport chip) is malformed,
    truncated, over-long or of an unsupported format. (A MatcherError through InputError:
    ``class DocumentError(MatcherError, InputError)`` has no consistent MRO.)"""


class QualityError(MatcherError):
    """A face image failed a quality policy (``Engine.template(..., quality="enrol")``).

    ``.quality`` is the failed :class:`matcher.Quality`; ``.reason`` a short instruction a gate can
    show or speak ("move closer", "look at the camera", "too dark", "hold still", "one person at a
    time"); ``str()`` adds the measured values that failed.
    """

    def __init__(self, message: str, quality: object = None, reason: str | None = None) -> None:
        super().__init__(message)
        self.quality = quality
        self.reason = reason
