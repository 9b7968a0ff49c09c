"""The trainer's former home of the atomic writers, now grape_dsl.util.atomic (shared with grape_dsl).

Kept only so that branches written against this path still import while they are merged;
new code imports grape_dsl.util.atomic.
"""

from grape_dsl.util.atomic import atomic_directory, atomic_write, atomic_write_text

__all__ = ["atomic_directory", "atomic_write", "atomic_write_text"]
