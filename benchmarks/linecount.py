"""Run a target script with a Python line counter that signals switch on and off.

    python benchmarks/linecount.py benchmarks/targets/acdg_serve.py --port 8000 ...

SIGUSR1 starts counting (and forgets earlier counts); SIGUSR2 stops and writes
``count<TAB>function<TAB>file`` lines, most first, to ``$LINECOUNT_OUT``. ``profile.py
--lines`` drives it. Lines run per round trip is a measure of interpreter work that,
unlike CPU time, does not move with the load on a shared machine.
"""

from __future__ import annotations

import os
import runpy
import signal
import sys
from collections import Counter
from types import FrameType
from typing import Any

counts: Counter[tuple[str, str]] = Counter()


def _line(frame: FrameType, event: str, arg: Any) -> Any:
    if event == "line":
        code = frame.f_code
        counts[code.co_filename, code.co_name] += 1
    return _line


def _call(frame: FrameType, event: str, arg: Any) -> Any:
    return _line if event == "call" else None


def start(*_: Any) -> None:
    counts.clear()
    sys.settrace(_call)  # frames entered from now on; the event loop calls them all


def stop(*_: Any) -> None:
    sys.settrace(None)
    with open(os.environ["LINECOUNT_OUT"], "w") as out:
        for (filename, function), n in counts.most_common():
            out.write(f"{n}\t{function}\t{filename}\n")


if __name__ == "__main__":
    signal.signal(signal.SIGUSR1, start)
    signal.signal(signal.SIGUSR2, stop)
    script, sys.argv = sys.argv[1], sys.argv[1:]
    sys.path.insert(0, os.path.dirname(os.path.abspath(script)))
    runpy.run_path(script, run_name="__main__")
