"""Child processes (data loader workers) that end with the process that made them, even on kill -9."""
import ctypes
import os
import signal
import sys

__all__ = ['end_children_with_this_process']

_PR_SET_PDEATHSIG = 1
_registered = False


def _ask_for_death_with_parent() -> None:
    """In a freshly forked child: get SIGKILL when the parent dies (Linux ``prctl``), and die now if
    the parent is already gone."""
    parent = os.getppid()
    try:
        ctypes.CDLL(None, use_errno=True).prctl(_PR_SET_PDEATHSIG, signal.SIGKILL)
    except (OSError, AttributeError):
        return
    if os.getppid() != parent:  # the parent died between fork and prctl
        os._exit(1)


def end_children_with_this_process() -> bool:
    """Make every process forked from now on (e.g. ``DataLoader`` workers) get SIGKILL when this one
    ends, however it ends. Without it, a ``kill -9`` of a training process leaves its workers blocked
    forever. Linux only (returns False elsewhere); calling it again does nothing."""
    global _registered
    if not sys.platform.startswith('linux'):
        return False
    if not _registered:
        os.register_at_fork(after_in_child=_ask_for_death_with_parent)
        _registered = True
    return True
