"""Peak memory of the current run.

CPU: the peak resident set size of this process's address space (VmHWM in
/proc/self/status), which includes the interpreter and imported libraries; one
run per process (as `sweep` does) makes it the run's own figure. Not getrusage's
ru_maxrss: Linux carries that over from the parent across fork and exec, so a
run started by a large process (a sweep, pytest) would report the parent's peak. CUDA: the caching allocator's
peak (`torch.cuda.max_memory_allocated`) after a reset at run start, which
counts tensors only, not the CUDA context or allocator slack.
"""

from __future__ import annotations

import resource
import sys

import torch


def cpu_peak_rss_bytes() -> int:
    try:
        with open("/proc/self/status") as fh:
            for line in fh:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    # Linux reports KiB, macOS bytes.
    return int(peak if sys.platform == "darwin" else peak * 1024)


def current_rss_bytes() -> int:
    try:
        with open("/proc/self/statm") as fh:
            pages = int(fh.read().split()[1])
        import os

        return pages * os.sysconf("SC_PAGE_SIZE")
    except OSError:
        return cpu_peak_rss_bytes()


class PeakMemory:
    def __init__(self, device: torch.device):
        self.device = device

    def reset(self) -> None:
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
            torch.cuda.reset_peak_memory_stats(self.device)

    def peak_bytes(self) -> int:
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
            return int(torch.cuda.max_memory_allocated(self.device))
        return cpu_peak_rss_bytes()

    @property
    def method(self) -> str:
        return "cuda_max_memory_allocated" if self.device.type == "cuda" else "peak_rss"
