"""matcher: face biometric matching for automated border control gates.

>>> import matcher
>>> eng = matcher.Engine()
>>> tpl = eng.template("traveller.jpg")
"""

from matcher import errors
from matcher.decision import Decision
from matcher.engine import Engine
from matcher.gallery import Candidate, Gallery, Identification
from matcher.image import load_image
from matcher.quality import Quality
from matcher.sealing import seal, seal_text, unseal, unseal_text
from matcher.store import GalleryStore
from matcher.types import Face, Template

__all__ = ["Candidate", "Decision", "Engine", "Face", "Gallery", "GalleryStore", "Identification",
           "Quality", "Template", "errors", "load_image", "seal", "seal_text", "unseal",
           "unseal_text"]
__version__ = "0.1.0"
