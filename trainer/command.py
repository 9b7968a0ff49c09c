"""The exit-status convention every trainer command follows, in one place.

    0    done
    1    failure: the command could not do its job (unreadable input file, unusable policy, a
         resume into a folder made with other settings, a full disk)
    2    usage: a bad flag, flag value or combination of flags (argparse's own errors exit 2 too)
    130  interrupted (Ctrl-C); every command keeps what it finished, and running it again resumes

Errors go to stderr as one line `PROG: error: MESSAGE`, never a traceback.
"""

from __future__ import annotations

import argparse
import contextlib
import signal
import sys
import threading
from collections.abc import Callable, Iterator

OK, FAILURE, USAGE, INTERRUPTED = 0, 1, 2, 130


class UsageError(Exception):
    """A bad flag value or combination of flags (exit 2)."""


class CommandError(Exception):
    """The command could not do its job (exit 1)."""


def report(prog: str, message: str, code: int, parser: argparse.ArgumentParser | None = None) -> int:
    """Print the error (after the usage line, for usage errors) and return `code`."""
    if parser is not None and code == USAGE:
        parser.print_usage(sys.stderr)
    print(f"{prog}: error: {message}", file=sys.stderr)
    return code


class Interrupted(KeyboardInterrupt):
    """Ctrl-C, raised by our SIGINT handler.

    A subclass on purpose: when a bare KeyboardInterrupt passes through code that a C extension
    runs with PyRun_*, CPython marks it "unhandled" and, at exit, kills the process with SIGINT
    even though the command caught it and asked for 130 (seen as exit -2 now and then).
    CPython checks for exactly KeyboardInterrupt, so a subclass keeps the exit status ours.
    """


def _raise_interrupted(signum: int, frame: object) -> None:
    raise Interrupted


@contextlib.contextmanager
def _sigint_raises_interrupted() -> Iterator[None]:
    if threading.current_thread() is not threading.main_thread():  # signal handlers live in the main thread
        yield
        return
    previous = signal.signal(signal.SIGINT, _raise_interrupted)
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, previous)


def run_command(
    prog: str,
    body: Callable[[], int],
    *,
    parser: argparse.ArgumentParser | None = None,
    failures: tuple[type[BaseException], ...] = (),
    interrupted: str = "interrupted",
) -> int:
    """Run a command's body and map what it raises to the exit status above.

    `failures` are the command's own error types that mean exit 1 besides CommandError;
    `interrupted` is the Ctrl-C message (say how to resume).
    """
    try:
        with _sigint_raises_interrupted():
            return body()
    except UsageError as error:
        return report(prog, str(error), USAGE, parser)
    except (CommandError, *failures) as error:
        return report(prog, str(error), FAILURE)
    except KeyboardInterrupt:
        return report(prog, interrupted, INTERRUPTED)
    except BrokenPipeError:  # output piped into `head` and closed early: not an error
        sys.stderr.close()
        return OK
