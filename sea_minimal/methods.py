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
    """SEA with ``SEAConfig.paper`` (recipe "langevin"), ``SEAConfig.released_code`` (recipe "reference") or
    ``SEAConfig.exact_mcmc`` (recipe "dlp", the MH-corrected sampler) defaults."""
    factories = {"langevin": SEAConfig.paper, "reference": SEAConfig.released_code, "dlp": SEAConfig.exact_mcmc}
    if recipe not in factories:
        raise ValueError(f"recipe={recipe!r} (choose one of {sorted(factories)})")
    factory = factories[recipe]
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

    from .contrast import pi_star

    for name, fn in {**BASELINES, "pi_star": pi_star}.items():
        METHODS.setdefault(name, fn)


_register_baselines()
