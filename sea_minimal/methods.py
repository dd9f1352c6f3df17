"""The registry of alignment methods the experiment runner can call, all with one signature::

    method(policy: Policy, reward: Reward, prompt: str, seed: int, **params) -> SEAResult

``params`` are the method's own settings (for SEA: any SEAConfig field). Every method returns the same
result type (``SEAResult``: ``text``, ``candidates``, ``method``, ``compute``, ...), so the runner, the
metrics and the notebooks treat them alike.
"""

from __future__ import annotations

from typing import Callable

from .config import SEAConfig
from .models import Policy
from .rewards import Reward
from .sampler import SEA, SEAResult

Method = Callable[..., SEAResult]


def sea(policy: Policy, reward: Reward, prompt: str, seed: int, recipe: str = "langevin", **params) -> SEAResult:
    """SEA with ``SEAConfig.paper`` (recipe "langevin") or ``SEAConfig.released_code`` (recipe "reference") defaults."""
    factory = SEAConfig.paper if recipe == "langevin" else SEAConfig.released_code
    config = factory(seed=seed, **params)
    return SEA(policy, reward, config).run([prompt], progress=False)[0]


METHODS: dict[str, Method] = {"sea": sea}


def register(name: str, fn: Method) -> None:
    if name in METHODS:
        raise ValueError(f"method {name!r} is already registered")
    METHODS[name] = fn


def get_method(name: str) -> Method:
    if name not in METHODS:
        raise KeyError(f"Unknown method {name!r}. Known methods: {sorted(METHODS)}")
    return METHODS[name]


def _register_baselines() -> None:
    from .baselines import BASELINES

    for name, fn in BASELINES.items():
        METHODS.setdefault(name, fn)


_register_baselines()
