"""The compiler's middle end: lowering (lower.py) and the straight-line blocks (blocks.py)."""

# Bump whenever generated kernels change meaning or layout: it is part of the kernel cache key.
COMPILER_VERSION = "0.2.0"
