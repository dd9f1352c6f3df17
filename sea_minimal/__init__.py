"""sea_minimal: a small, readable implementation of SEA (Simple Energy Adaptation).

Inference-time alignment in continuous space (Yuan, Xiao et al., NeurIPS 2025): a response is kept as
per-position logits and moved by gradient steps on U = -log pi_ref(y|x) - alpha r(x, y).
"""

__version__ = "0.1.0"

from .config import SEAConfig  # noqa: E402
from .models import BUNDLED_MODELS, DEFAULT_MODEL, ModelLoadError, Policy, load_policy  # noqa: E402
from .rewards import HFClassifierReward, Reward, VocabMismatchError, VocabReward, demo_reward  # noqa: E402
from .sampler import SEA, SEAResult, align, langevin_step  # noqa: E402
from .methods import METHODS, get_method  # noqa: E402
from .reward_model import BackboneReward, load_harmlessness_reward, load_hf_reward  # noqa: E402
from .contrast import ContrastReward  # noqa: E402

__all__ = [
    "SEA", "SEAConfig", "SEAResult", "align", "langevin_step", "load_policy", "Policy", "BUNDLED_MODELS",
    "DEFAULT_MODEL", "ModelLoadError", "Reward", "VocabReward", "HFClassifierReward", "VocabMismatchError",
    "demo_reward", "METHODS", "get_method", "BackboneReward", "load_harmlessness_reward", "load_hf_reward",
    "ContrastReward",
]
