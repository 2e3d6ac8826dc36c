"""Code generation: lowers derived backward passes to NumPy and writes modules.

``python -m codegen`` regenerates ``layers/generated``; see ``codegen.generate``.
"""
