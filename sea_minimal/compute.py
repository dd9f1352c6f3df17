"""Compute accounting shared by SEA and the baselines, so that comparisons can be compute-matched.

A :class:`ComputeMeter` watches modules through forward hooks, so no method has to count by hand:

* forward tokens: positions run through a watched model (batch x new positions per call; cached prompt
  positions are not re-counted, because they are not recomputed);
* backward tokens: the forward tokens of calls made with gradients enabled (each is backpropagated once);
* reward calls: responses scored by a reward (one per row of the batch);
* wall time (s) and peak memory (MiB above the level at entry: the CUDA allocator's peak on GPU; on CPU the
  peak of the process's resident set, sampled every 5 ms by a background thread).

The hooks sit on each model's transformer body (``base_model``), which every forward passes through, whether
it comes from the causal LM, a classification head or a reward that calls the body directly; a model shared
by the policy and a reward is hooked once, so nothing is counted twice.
"""

from __future__ import annotations

import os
import threading
import time
from dataclasses import asdict, dataclass

import torch


@dataclass
class Compute:
    forward_tokens: int = 0
    backward_tokens: int = 0
    reward_calls: int = 0
    wall_time: float = 0.0
    peak_memory_mib: float = 0.0

    def to_dict(self) -> dict:
        return asdict(self)


def _rss_mib() -> float:
    """Current resident set size of this process in MiB (Linux /proc; 0 where unavailable)."""
    try:
        with open("/proc/self/statm") as fh:
            return int(fh.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20
    except (OSError, ValueError, IndexError):
        return 0.0


class _RSSPeak(threading.Thread):
    """Samples the resident set size until stopped; ``peak`` is the largest value seen (MiB)."""

    def __init__(self, interval: float = 0.005):
        super().__init__(daemon=True)
        self.interval, self.peak, self._halt = interval, _rss_mib(), threading.Event()

    def run(self) -> None:
        while not self._halt.wait(self.interval):
            self.peak = max(self.peak, _rss_mib())

    def stop(self) -> float:
        self._halt.set()
        self.join()
        return max(self.peak, _rss_mib())


class ComputeMeter:
    """Context manager counting the work of ``models`` (policy / reward models) inside its block.

    ``meter.count_reward(n)`` records n reward evaluations (the sampler and baselines call it).
    """

    def __init__(self, *models: torch.nn.Module, device: str | torch.device = "cpu"):
        self.models = [m for m in models if m is not None]
        self.device = torch.device(device)
        self.compute = Compute()
        self._handles = []

    def _hook(self, module, args, kwargs):
        x = kwargs.get("input_ids")
        if x is None:
            x = kwargs.get("inputs_embeds")
        if x is None and args:
            x = args[0]
        if x is None:
            return
        tokens = int(x.shape[0] * x.shape[1])
        self.compute.forward_tokens += tokens
        if torch.is_grad_enabled():
            self.compute.backward_tokens += tokens

    def count_reward(self, n: int) -> None:
        self.compute.reward_calls += int(n)

    def __enter__(self) -> "ComputeMeter":
        seen = set()
        for model in self.models:
            body = getattr(model, "base_model", None)
            body = body if isinstance(body, torch.nn.Module) else model
            if id(body) not in seen:
                seen.add(id(body))
                self._handles.append(body.register_forward_pre_hook(self._hook, with_kwargs=True))
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
            torch.cuda.reset_peak_memory_stats(self.device)
            self._mem0 = torch.cuda.memory_allocated(self.device)
        else:
            self._mem0 = _rss_mib()
            self._sampler = _RSSPeak()
            self._sampler.start()
        self._t0 = time.perf_counter()
        return self

    def __exit__(self, *exc) -> None:
        for handle in self._handles:
            handle.remove()
        self._handles.clear()
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
            self.compute.peak_memory_mib = (torch.cuda.max_memory_allocated(self.device) - self._mem0) / 2**20
        else:
            self.compute.peak_memory_mib = max(0.0, self._sampler.stop() - self._mem0)
        self.compute.wall_time = time.perf_counter() - self._t0
