"""The compute meter: tokens through each watched body (once per shared body), backward tokens only with gradients,
reward calls, wall time and peak memory; hooks gone after the block."""

import mmap
import time

import pytest
import torch

from conftest import DEVICE, tiny_lm
from sea_minimal import compute
from sea_minimal.compute import Compute, ComputeMeter


def vm_rss_mib() -> float:
    """The kernel's own VmRSS line (kB), an independent reading of what _rss_mib reads from statm (pages)."""
    with open("/proc/self/status") as fh:
        line = next(line for line in fh if line.startswith("VmRSS:"))
    return int(line.split()[1]) / 1024


def touched_block(mib: int) -> mmap.mmap:
    """``mib`` MiB of fresh anonymous pages, every page written: resident until closed. A numpy array would do only
    in a small process: in a big one (mutmut's copy of the package) malloc reuses freed pages that are already
    resident, and the RSS does not move."""
    block = mmap.mmap(-1, mib * 2**20)
    block.write(b"\1" * (mib * 2**20))
    return block


def test_resident_set_size_matches_the_kernels_own_count_and_is_zero_where_unreadable(monkeypatch):
    assert abs(compute._rss_mib() - vm_rss_mib()) < 8  # MiB; the two reads are microseconds apart

    def unreadable(*a, **kw):
        raise OSError("no /proc here")

    monkeypatch.setattr(compute, "open", unreadable, raising=False)
    assert compute._rss_mib() == 0.0


def test_the_peak_sampler_sees_a_short_lived_allocation():
    sampler = compute._RSSPeak()
    assert sampler.daemon  # never keeps the interpreter alive
    start = sampler.peak
    sampler.start()
    block = touched_block(64)
    time.sleep(0.05)
    block.close()
    time.sleep(0.02)
    peak = sampler.stop()
    assert not sampler.is_alive() and peak - start > 48


def test_forward_tokens_are_counted_from_ids_embeddings_or_positional_input():
    model = tiny_lm()
    with ComputeMeter(model, device=DEVICE) as meter:
        with torch.no_grad():
            model(input_ids=torch.zeros(2, 3, dtype=torch.long, device=DEVICE))  # 6 tokens
            model(inputs_embeds=torch.zeros(4, 5, 16, device=DEVICE))  # 20 tokens
            model.model(torch.zeros(1, 7, dtype=torch.long, device=DEVICE))  # 7 tokens, positional
        assert (meter.compute.forward_tokens, meter.compute.backward_tokens) == (33, 0)
        model(input_ids=torch.zeros(3, 2, dtype=torch.long, device=DEVICE))  # with gradients: 6 both ways
        meter.count_reward(4)
        meter.count_reward(torch.tensor(2))
    assert meter.compute.forward_tokens == 39 and meter.compute.backward_tokens == 6
    assert meter.compute.reward_calls == 6 and isinstance(meter.compute.reward_calls, int)
    with torch.no_grad():
        model(input_ids=torch.zeros(2, 3, dtype=torch.long, device=DEVICE))  # after the block: not counted
    assert meter.compute.forward_tokens == 39 and not meter._handles


def test_a_body_shared_by_two_models_is_hooked_once_and_none_is_ignored():
    model = tiny_lm()
    with ComputeMeter(model, model.model, None, device=DEVICE) as meter:
        with torch.no_grad():
            model(input_ids=torch.zeros(1, 4, dtype=torch.long, device=DEVICE))
    assert meter.compute.forward_tokens == 4 and len(meter.models) == 2


def test_wall_time_and_peak_memory_of_the_block():
    start = time.perf_counter()
    with ComputeMeter(device="cpu") as meter:
        block = touched_block(64)
        time.sleep(0.05)
        block.close()
    elapsed = time.perf_counter() - start
    assert 0.05 <= meter.compute.wall_time <= elapsed
    assert meter.compute.peak_memory_mib > 48
    assert set(Compute().to_dict()) == {"forward_tokens", "backward_tokens", "reward_calls", "wall_time",
                                        "peak_memory_mib"}
    assert Compute().to_dict() == {"forward_tokens": 0, "backward_tokens": 0, "reward_calls": 0, "wall_time": 0.0,
                                   "peak_memory_mib": 0.0}


class FakeAllocator:
    """torch.cuda's memory counters for one device, in bytes, on a machine without a GPU: the meter's CUDA branch
    is then checked on the CPU (the GPU test below checks it against the real allocator where there is one)."""

    def __init__(self, allocated_mib: float, earlier_peak_mib: float):
        self.allocated, self.peak, self.calls = allocated_mib * 2**20, earlier_peak_mib * 2**20, []

    def _called(self, name, device):
        assert device == torch.device("cuda", 1), f"{name} was asked about {device!r}, not the meter's device"
        self.calls.append(name)

    def synchronize(self, device):
        self._called("synchronize", device)

    def reset_peak_memory_stats(self, device):
        self._called("reset_peak_memory_stats", device)
        self.peak = self.allocated

    def memory_allocated(self, device):
        self._called("memory_allocated", device)
        return self.allocated

    def max_memory_allocated(self, device):
        self._called("max_memory_allocated", device)
        return self.peak

    def allocate(self, mib: float):
        self.allocated += mib * 2**20
        self.peak = max(self.peak, self.allocated)


def test_peak_memory_on_cuda_is_the_allocators_peak_above_entry_since_a_reset(monkeypatch):
    """On a CUDA device the meter resets the allocator's peak on entry (an earlier, higher peak is not this block's),
    reads it after a synchronize on exit, and reports it in MiB above what was allocated on entry."""
    fake = FakeAllocator(allocated_mib=100, earlier_peak_mib=500)
    for name in ("synchronize", "reset_peak_memory_stats", "memory_allocated", "max_memory_allocated"):
        monkeypatch.setattr(torch.cuda, name, getattr(fake, name))
    with ComputeMeter(device="cuda:1") as meter:
        fake.allocate(48)
        fake.allocate(-16)
    assert meter.compute.peak_memory_mib == 48.0
    assert fake.calls == ["synchronize", "reset_peak_memory_stats", "memory_allocated",
                          "synchronize", "max_memory_allocated"]


@pytest.mark.skipif(not torch.cuda.is_available(), reason="the CUDA allocator's peak needs a GPU")
def test_peak_memory_on_a_gpu_is_the_allocators_peak_above_entry():
    with ComputeMeter(device="cuda") as meter:
        x = torch.empty(32 * 2**20 // 4, device="cuda")  # 32 MiB
        del x
    assert 31 < meter.compute.peak_memory_mib < 40


def test_a_model_without_a_base_model_is_hooked_itself():
    """A plain module (no ``base_model``, e.g. a reward head) is metered through its own forward."""
    head = torch.nn.Linear(3, 1)
    with ComputeMeter(head) as meter:
        head(torch.zeros(2, 5, 3))
    assert meter.compute.forward_tokens == 10 and not head._forward_pre_hooks


def test_peak_memory_is_measured_above_the_blocks_start():
    with ComputeMeter() as empty:
        pass
    with ComputeMeter() as meter:
        block = touched_block(64)
        time.sleep(0.05)
        block.close()
    assert 0.0 <= empty.compute.peak_memory_mib < 1.0  # nothing allocated: no floor above 0
    assert 48 < meter.compute.peak_memory_mib < 64 + 48  # the block, not the process's whole RSS
