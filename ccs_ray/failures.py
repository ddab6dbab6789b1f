"""What a failed run says: one line with the root cause, and the command that resumes it.

- :func:`root_cause`: the exception that actually failed. A failure inside a Ray actor or task reaches the driver
  wrapped (``RayTaskError(OSError)``, whose text is the remote traceback with terminal colours); the cause it
  carries is unwrapped, as are exceptions re-raised ``from`` one of those.
- :func:`reason`: that cause as one plain line (for an actor whose ``__init__`` raised, the last line of Ray's
  report, the only place that error is kept). ccs-ray's own errors (a :class:`~ccs_ray.errors.UserError`, a
  refused write :class:`~ccs_ray.files.WriteError`, a vanished root) are their message; a storage error with an
  errno is its cause in words and the file (``no space left on device (/path)``); anything else is its type and
  the first line of its message. No terminal escape codes.
- :func:`command_line`: a ``ccs-ray run`` command, shell-quoted, that a user can paste as it is (a results root
  with spaces or ``<>`` included).
- :class:`Interrupted`: SIGTERM as an exception (a subclass of KeyboardInterrupt, so that it stops a run as Ctrl-C
  does), raised in the main thread by :func:`raise_on_sigterm`'s handler; :func:`interrupt_status`: the exit
  status after an interrupt (128 + the signal's number, as shells report it).

Torch- and Ray-free (Ray's wrapper is recognised by its ``cause`` attribute).
"""

from __future__ import annotations

import re
import shlex
import signal

from .errors import UserError

ANSI = re.compile(r"\x1b\[[0-9;?]*[ -/]*[@-~]")  # terminal colour and cursor codes


class Interrupted(KeyboardInterrupt):
    """The process was asked to stop (SIGTERM): a run records itself ``interrupted`` as for Ctrl-C."""

    signal_name = "SIGTERM"


def raise_on_sigterm() -> None:
    """From now on, SIGTERM raises :class:`Interrupted` in the main thread (call it from the main thread)."""

    def handler(signum, frame):
        raise Interrupted

    signal.signal(signal.SIGTERM, handler)


def interrupt_name(e: BaseException) -> str:
    """``SIGTERM`` or ``Ctrl-C (SIGINT)``: how an interrupt reached the run."""
    return e.signal_name if isinstance(e, Interrupted) else "Ctrl-C (SIGINT)"


def interrupt_status(e: BaseException | None) -> int:
    """The exit status after an interrupt: 128 + its signal's number (130 for Ctrl-C, 143 for SIGTERM)."""
    return 128 + (signal.SIGTERM if isinstance(e, Interrupted) else signal.SIGINT)


def root_cause(e: BaseException) -> BaseException:
    """The exception that failed: Ray's task and actor wrappers unwrapped to the cause they carry, and an exception
    raised ``from`` such a wrapper replaced by that wrapper's cause."""
    seen: set[int] = set()
    while id(e) not in seen:
        seen.add(id(e))
        cause = getattr(e, "cause", None)  # ray.exceptions.RayTaskError carries the remote exception here
        if isinstance(cause, BaseException) and type(e).__module__.startswith("ray."):
            e = cause
            continue
        chained = e.__cause__
        if chained is not None and type(chained).__module__.startswith("ray.") and not isinstance(e, UserError):
            e = chained
            continue
        break
    return e


def _creation_error(e: BaseException) -> str | None:
    """The error an actor's ``__init__`` raised, from the text of Ray's report of its death (which keeps no exception
    object): the report's last line, without the module path of a ccs-ray exception; None for another death."""
    if not getattr(e, "actor_init_failed", False):
        return None
    lines = [line.strip() for line in ANSI.sub("", str(e)).splitlines() if line.strip()]
    return re.sub(r"^ccs_ray(\.\w+)*\.\w+: ", "", lines[-1]) if lines else None


def reason(e: BaseException) -> str:
    """:func:`root_cause` of ``e`` as one plain line (module docstring)."""
    cause = root_cause(e)
    created = _creation_error(cause)
    if created is not None:
        text = created
    elif isinstance(cause, UserError) or type(cause).__module__.startswith("ccs_ray."):
        text = str(cause)
    elif isinstance(cause, OSError) and cause.errno is not None and cause.strerror:
        text = cause.strerror[:1].lower() + cause.strerror[1:]
        text += f" ({cause.filename})" if cause.filename else ""
    else:
        first = str(cause).strip()
        text = f"{type(cause).__name__}: {first}" if first else type(cause).__name__
    lines = [line.strip() for line in ANSI.sub("", text).splitlines() if line.strip()]
    return lines[0] if lines else type(cause).__name__


def command_line(*args: str) -> str:
    """``ccs-ray ARGS``, each argument shell-quoted."""
    return shlex.join(["ccs-ray", *args])
