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
    return SEA(policy, reward, _sea_config(recipe, seed, params)).run([prompt], progress=False)[0]


def _sea_config(recipe: str, seed: int, params: dict) -> SEAConfig:
    factories = {"langevin": SEAConfig.paper, "reference": SEAConfig.released_code, "dlp": SEAConfig.exact_mcmc}
    if recipe not in factories:
        raise ValueError(f"recipe={recipe!r} (choose one of {sorted(factories)})")
    return factories[recipe](seed=seed, **params)


def sea_many(policy: Policy, reward: Reward, prompts: list, seeds: list[int], recipe: str = "langevin",
             **params) -> list[SEAResult]:
    """:func:`sea` for several prompts run as one batch (``SEA.run(batch_size=len(prompts))``): each result equals
    that prompt's own run up to floating-point rounding, with its share of the batch's compute (the runner's
    ``batch_prompts``)."""
    config = _sea_config(recipe, seeds[0] if seeds else 0, params)
    return SEA(policy, reward, config).run(list(prompts), progress=False, batch_size=max(1, len(prompts)), seeds=seeds)


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
    from .baselines import BATCHED as BATCHED_BASELINES

    from .contrast import pi_star

    for name, fn in {**BASELINES, "pi_star": pi_star}.items():
        METHODS.setdefault(name, fn)
    BATCHED.update(BATCHED_BASELINES)


#: Methods with a many-prompt form ``fn(policy, reward, prompts, seeds, **params) -> [SEAResult]`` (the runner's
#: ``batch_prompts``); the others run one prompt at a time.
BATCHED: dict[str, Callable[..., list[SEAResult]]] = {"sea": sea_many}
_register_baselines()
