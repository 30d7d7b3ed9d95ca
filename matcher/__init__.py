"""matcher: face biometric matching for automated border control gates.

>>> import matcher
>>> eng = matcher.Engine()
>>> tpl = eng.template("traveller.jpg")
"""

from matcher import errors
from matcher.engine import Engine
from matcher.image import load_image
from matcher.sealing import seal, seal_text, unseal, unseal_text
from matcher.types import Face, Template

__all__ = ["Engine", "Face", "Template", "errors", "load_image", "seal", "seal_text", "unseal",
           "unseal_text"]
__version__ = "0.1.0"
