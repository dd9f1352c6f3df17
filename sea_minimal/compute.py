"""Compute accounting shared by SEA and the baselines, so that comparisons can be compute-matched.

A :class:`ComputeMeter` watches modules through forward hooks, so no method has to count by hand:

* forward tokens: positions run through a watched model (batch x new positions per call; cached prompt
  positions are not re-counted, because they are not recomputed);
* backward tokens: the forward tokens of calls made with gradients enabled (each is backpropagated once);
* reward calls: responses scored by a reward (one per row of the batch);
* wall time (s) and peak memory (MiB: CUDA allocator peak on GPU, process max RSS growth on CPU).
"""

from __future__ import annotations

import resource
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
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0  # Linux reports KiB


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
            if id(model) not in seen:
                seen.add(id(model))
                self._handles.append(model.register_forward_pre_hook(self._hook, with_kwargs=True))
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
            torch.cuda.reset_peak_memory_stats(self.device)
            self._mem0 = torch.cuda.memory_allocated(self.device)
        else:
            self._mem0 = _rss_mib()
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
            self.compute.peak_memory_mib = max(0.0, _rss_mib() - self._mem0)
        self.compute.wall_time = time.perf_counter() - self._t0
