"""Model cards and the code that prepares runnable ONNX from the files they describe.

Installed as ``matcher.models``; the cards (``*.json`` beside this file) ship inside the package.
"""
