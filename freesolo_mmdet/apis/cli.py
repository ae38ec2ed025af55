"""What the command lines share: a user's input error ends in one line on stderr and exit code 2, and
SIGINT/SIGTERM stop the work cleanly (temporary files removed, data loader workers ended)."""
import signal
import sys
from typing import Callable, Optional, Sequence

import torch.distributed as dist

from freesolo_mmdet.utils.process import end_children_with_this_process
from .config import InputError

__all__ = ['run_main']

#: errors that come from the user's input: wrong paths, empty folders, unknown keys, no mask found
USER_ERRORS = (InputError, FileNotFoundError, NotADirectoryError, PermissionError)


class Stopped(BaseException):
    """Raised in the main thread by SIGTERM, so that ``finally`` blocks and context managers run."""


def _stop(signum, frame) -> None:
    raise Stopped(signum)


def run_main(main: Callable[[Optional[Sequence[str]]], object], argv: Optional[Sequence[str]] = None) -> None:
    """Call ``main(argv)``.

    A user error prints ``error: <message>`` and exits with code 2 (as argparse does for usage errors);
    SIGINT or SIGTERM stop it with one line and exit code 128 + the signal's number, and forked children
    (data loader workers) end with this process even on ``kill -9``; anything else keeps its traceback.
    Outputs are written atomically, so a rerun resumes from what was finished.

    A process group that ``main`` joined is destroyed before the interpreter exits: left to the interpreter's
    teardown, gloo's worker threads can abort the process ("terminate called without an active exception",
    pytorch/pytorch#190489), which fails a torchrun job whose work was done.
    """
    signal.signal(signal.SIGTERM, _stop)
    end_children_with_this_process()  # kill -9 cannot be caught: workers are told by the kernel
    try:
        try:
            main(argv)
        finally:
            if dist.is_available() and dist.is_initialized():
                dist.destroy_process_group()
    except USER_ERRORS as e:
        message = e.args[0] if isinstance(e, InputError) or len(e.args) == 1 else str(e)
        print(f'error: {message}', file=sys.stderr, flush=True)
        sys.exit(2)
    except (KeyboardInterrupt, Stopped) as e:
        signum = e.args[0] if isinstance(e, Stopped) else signal.SIGINT
        print(f'stopped by {signal.Signals(signum).name}; rerun the same command to resume', file=sys.stderr,
              flush=True)
        sys.exit(128 + signum)
