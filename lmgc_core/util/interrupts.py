"""Ctrl-C and SIGTERM that cannot get lost.

Python raises a signal's exception in the main thread wherever it is. When that is inside a
callback from C (numba compiling a kernel calls back through ctypes), the exception is printed
as "Exception ignored" and dropped, and the command would run on. So the ``lmgc`` command's
handlers (:func:`install`) also record the signal (and keep that traceback quiet), and the
loops that write output call :func:`check`, which raises it again there: at the latest, the
next chunk stops the run.
"""

from __future__ import annotations

import signal
import sys
from typing import Any


class Terminated(KeyboardInterrupt):
    """SIGTERM, raised like Ctrl-C's KeyboardInterrupt, so that it unwinds through the same
    cleanup (temporary outputs removed, coding threads joined, the archive's zip dropped)."""

    signum = signal.SIGTERM


class HungUp(Terminated):
    """SIGHUP (the terminal closed, ssh dropped): the same cleanup (a hidden ``.part`` of
    14 MB stayed), exit 129."""

    signum = getattr(signal, "SIGHUP", 1)  # Windows has none: this module must still import


_pending: type[BaseException] | None = None
_delivered = False


def _raise(exc_type: type[BaseException]) -> None:
    global _pending, _delivered
    _pending, _delivered = exc_type, True
    raise exc_type


def _on_sigint(signum: int, frame: Any) -> None:
    _raise(KeyboardInterrupt)


def _on_sigterm(signum: int, frame: Any) -> None:
    signal.signal(signal.SIGTERM, signal.SIG_IGN)  # a second TERM must not break the cleanup
    _raise(Terminated)


def _on_sighup(signum: int, frame: Any) -> None:
    signal.signal(signal.SIGHUP, signal.SIG_IGN)
    _raise(HungUp)


def _unraisable(info: Any) -> None:
    """Once a signal stopped the run, "Exception ignored" noise is dropped: the signal's own
    exception swallowed in a callback (:func:`check` raises it again), and what it broke on
    its way (llvmlite objects interrupted while numba compiled, collected at exit)."""
    if not _delivered:
        sys.__unraisablehook__(info)


def install() -> None:
    """Handle SIGINT, SIGTERM and SIGHUP as above, unless they are ignored (a background job's
    SIGINT) or someone else handles them."""
    sys.unraisablehook = _unraisable
    if signal.getsignal(signal.SIGINT) is signal.default_int_handler:
        signal.signal(signal.SIGINT, _on_sigint)
    if signal.getsignal(signal.SIGTERM) == signal.SIG_DFL:
        signal.signal(signal.SIGTERM, _on_sigterm)
    hup = getattr(signal, "SIGHUP", None)  # not on Windows
    if hup is not None and signal.getsignal(hup) == signal.SIG_DFL:  # nohup: SIG_IGN, kept
        signal.signal(hup, _on_sighup)


def check() -> None:
    """Raise a signal whose exception was swallowed where it arrived (once)."""
    global _pending
    if _pending is not None:
        exc_type, _pending = _pending, None
        raise exc_type
