"""Thread policy: how many threads our processes compute with, and how their OpenMP threads wait.

torch's CPU kernels run in OpenMP parallel regions (libgomp in the pip wheels, libiomp in some conda builds).
Between regions the runtime lets idle threads spin before they sleep: libgomp ~300,000 spins (milliseconds)
unless `OMP_WAIT_POLICY` says otherwise, libiomp 200 ms (`KMP_BLOCKTIME`). Alone that spin saves a wake-up per
region; beside another busy process on the same few cores it burns the cores that process needs, and both
collapse (issue 27: a train step 13.6x slower beside a 2-thread matmul loop). `OMP_WAIT_POLICY=PASSIVE` gives
the fair share back but costs ~1.3x alone (a futex wake-up per region). The policy keeps a short spin: enough
to bridge the back-to-back regions of one forward/backward, short enough that a preempted thread sleeps soon.

The runtime reads these variables once, when it loads, i.e. at `import torch`: set in `os.environ` before that
they take effect (libgomp's spin, measured by CPU time burned in idle gaps: 0.25 s -> 0.05 s with
GOMP_SPINCOUNT=0 before the import, unchanged after it). So `configure_environment()` runs at the top of
`workbench/__init__.py`, before anything imports torch; a process that imported torch earlier keeps torch's
behaviour (`ThreadPolicy.spin_applied` is False there). The thread count, in contrast, can change at any time
(`torch.set_num_threads`), which `apply()` does.

Precedence, for each setting: what the user set wins. Thread count: `--threads N` (CLI) > `WORKBENCH_THREADS`
> `OMP_NUM_THREADS` > torch's default (the physical cores). Wait behaviour: a user's `OMP_WAIT_POLICY`,
`GOMP_SPINCOUNT` or `KMP_BLOCKTIME` is left alone; `WORKBENCH_THREAD_POLICY=off` disables all of it.
"""
from __future__ import annotations

import os
import sys
from dataclasses import dataclass

__all__ = ["GOMP_SPINCOUNT", "KMP_BLOCKTIME", "ThreadPolicy", "apply", "configure_environment", "parse_threads"]

# libgomp spins this many times (~0.3-1 ms on the CPUs we run on) before a waiting thread sleeps: about the gap
# between two parallel regions of a train step, ~1/30 of libgomp's default.
GOMP_SPINCOUNT = "10000"
KMP_BLOCKTIME = "1"  # libiomp: milliseconds before a waiting thread sleeps (its default is 200)


@dataclass(frozen=True)
class ThreadPolicy:
    """What this process runs with. threads: intra-op threads (None = torch's default, not touched);
    spin: the OpenMP wait settings in the environment; spin_applied: they were in place before torch loaded
    (False: torch was imported first, its runtime keeps its default wait behaviour); enabled: the policy is on."""

    threads: int | None
    spin: dict
    spin_applied: bool
    enabled: bool

    def describe(self) -> str:
        if not self.enabled:
            return "thread policy off (WORKBENCH_THREAD_POLICY=off)"
        threads = f"{self.threads} threads" if self.threads else "torch's default threads"
        spin = ", ".join(f"{k}={v}" for k, v in self.spin.items()) or "OpenMP defaults"
        late = "" if self.spin_applied else " (torch was imported before workbench: not in effect)"
        return f"{threads}; {spin}{late}"


def _enabled(environ) -> bool:
    return environ.get("WORKBENCH_THREAD_POLICY", "on").strip().lower() not in ("off", "0", "false", "no")


def parse_threads(value, where: str) -> int:
    """A positive thread count from `value` (str or int); `where` names its source in the error."""
    from workbench.errors import UsageError

    try:
        n = int(str(value).strip())
    except ValueError:
        n = 0
    if n < 1:
        raise UsageError(f"{where}: expected a positive number of threads, got {value!r}")
    return n


def configure_environment(environ=None) -> dict:
    """Set the OpenMP wait variables the user did not set (before torch is imported, so its runtime reads them).
    Returns the wait settings now in the environment. Never overrides a value already there."""
    environ = os.environ if environ is None else environ
    if not _enabled(environ):
        return {}
    wanted = environ.get("WORKBENCH_THREADS", "").strip()
    if wanted.isdigit() and int(wanted) > 0:  # before torch loads: its pool starts at this size (apply() checks it)
        environ["OMP_NUM_THREADS"] = wanted
    if "OMP_WAIT_POLICY" not in environ:  # a user's wait policy decides both runtimes' spin on its own
        environ.setdefault("GOMP_SPINCOUNT", GOMP_SPINCOUNT)
        environ.setdefault("KMP_BLOCKTIME", KMP_BLOCKTIME)
    return {k: environ[k] for k in ("OMP_WAIT_POLICY", "GOMP_SPINCOUNT", "KMP_BLOCKTIME") if k in environ}


_SPIN_BEFORE_TORCH = "torch" not in sys.modules  # this module is imported first thing in workbench/__init__


def apply(threads: int | None = None, environ=None) -> ThreadPolicy:
    """Configure the environment (effective only before torch loads) and the thread count: `threads` (e.g. from
    --threads) > WORKBENCH_THREADS > OMP_NUM_THREADS (torch read it already) > torch's default. The chosen
    count is also put in OMP_NUM_THREADS so worker processes (data loading, DDP) inherit it."""
    environ = os.environ if environ is None else environ
    spin = configure_environment(environ)
    enabled = _enabled(environ)
    if threads is not None:
        threads = parse_threads(threads, "--threads")
    elif environ.get("WORKBENCH_THREADS", "").strip():
        threads = parse_threads(environ["WORKBENCH_THREADS"], "environment variable WORKBENCH_THREADS")
    if threads is not None:
        environ["OMP_NUM_THREADS"] = str(threads)
        if "torch" in sys.modules:
            import torch

            torch.set_num_threads(threads)
    return ThreadPolicy(threads=threads, spin=spin, spin_applied=_SPIN_BEFORE_TORCH and enabled, enabled=enabled)
