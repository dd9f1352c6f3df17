"""The sampler's configuration: one dataclass, three recipes, every ablation a field."""

from __future__ import annotations

from dataclasses import asdict, dataclass, replace

RECIPES = ("langevin", "reference", "dlp")

# The released code's transient-noise schedule: (first iteration that uses the next entry, std).
REFERENCE_NOISE_SCHEDULE = ((50, 0.1), (100, 0.05), (150, 0.01), (200, 0.001))


@dataclass(frozen=True)
class SEAConfig:
    """Configuration of SEA. Defaults reproduce the paper (``langevin``) or the authors' code (``reference``).

    Shared fields
    -------------
    * recipe: ``"langevin"`` (the paper: Langevin steps on U = -log pi_ref - alpha r, straight-through tokens),
      ``"reference"`` (the released code: Adam on a detached COLD-style fluency loss plus a soft reward) or
      ``"dlp"`` (discrete Langevin proposal with a Metropolis-Hastings correction on the same U and the same
      one-hot gradient: a chain whose stationary distribution is exactly pi* ∝ exp(-U)).
    * num_chains: C, chains optimised in one batch (paper: 4).
    * length: T, response tokens; fixed, special tokens masked inside the span (released code: 50).
    * steps: iterations (released code: 200).
    * init: ``"policy"`` (samples of pi_ref, their teacher-forced logits / init_temp) or ``"random"`` (N(0,1) logits).
    * init_sample_temp: sampling temperature of the initial responses (released code: 0.8).
    * init_temp: teacher-forced logits are divided by this (released code: 5). Note: argmax(Z_0) is then the most
      likely token after the sampled prefix, not the sampled token itself (as in the released code).
    * init_keep_sample: lift each sampled token's logit to ``init_margin`` above the largest one, so that
      argmax(Z_0) is exactly the pi_ref sample (off by default, as in the released code).
    * init_fixed_length: draw the initial samples on the response space (exactly T tokens, special tokens banned:
      exact pi_ref samples there) instead of the released code's init, which stops a sample at its first special
      token and pads the rest with random logits (so argmax(Z_0) ends in random tokens). Off by default.
    * use_reward / use_reference: ablations "without reward" / "without reference".
    * use_noise: ablation "without noise".
    * mask_special: forbid EOS and chat-marker tokens inside the response span.
    * select: ``"last"`` (the final iterate of each chain) or ``"best"`` (the iterate with the highest hard reward).
    * track_soft_reward: record the reward of the relaxed tokens softmax(Z / tau) in the ``langevin`` trajectory
      (one extra no-gradient reward call per iteration; switch off for speed with a reward model).
    * seed: every random draw (init samples, noise) comes from one generator seeded with this.

    ``langevin`` fields
    -------------------
    * alpha: inverse KL coefficient. 500 = the released code's effective weight at T=50 (reward weight 1
      against per-token fluency weight 0.1 is alpha = 10 T relative to the summed log-likelihood).
    * step_size: eta in Z <- Z - eta grad U + sqrt(2 eta) noise_scale xi. The paper gives no value; 0.01 was not
      tuned. On SmolLM2 with the demo vocabulary reward it leaves the argmax unchanged for 10 steps (the
      straight-through gradient on a logit scales with its probability, and softmax(Z_0) is nearly flat);
      notebook 02 shows this and uses step_size=100 with noise_scale=0.01.
    * noise_scale: multiplies the Langevin noise (1 = exact Langevin; 0 = gradient descent).
    * st_tau: temperature of the straight-through backward pass, softmax(Z / tau).

    ``dlp`` fields (Zhang, Liu and Liu, "A Langevin-like Sampler for Discrete Distributions", ICML 2022)
    -------------------------------------------------------------------------------------------------------
    The state is a hard response y. With ``g = dU / d onehot(y)`` (one forward + backward), every position proposes
    ``y'_t ~ softmax_v(-(g_tv - g_t,y_t) / 2 - [v != y_t] / dlp_step)``, in parallel; the move is accepted with the
    MH probability ``min(1, exp(U(y) - U(y')) q(y | y') / q(y' | y))``. Uses ``alpha`` as the langevin recipe does.

    * dlp_step: the proposal's step size (larger: more positions change per proposal, fewer accepted).
    * dlp_block: positions that may change per proposal: 0 = all T at once (the original DLP); k > 0 = a block of k
      positions drawn uniformly at random each iteration, independently of the state, so the MH test stays exact
      (the others keep their token). Smaller blocks let a larger step be accepted on long responses.
    * mh_correction: False drops the accept/reject step (the unadjusted sampler, DULA: biased).
    * ``use_noise=False``: each position takes the proposal's most likely token and the move is kept only if it
      lowers U (a deterministic descent, the analogue of the langevin recipe without noise).

    ``reference`` fields
    --------------------
    * lr: Adam learning rate on Z (0.1; 0.01 for 3B).
    * reward_weight / fluency_weight: loss = -reward_weight r_soft + fluency_weight fluency (1.0 / 0.1).
    * reward_temp: soft reward input softmax(Z / reward_temp) (0.1; 0.2 for the 1B-Instruct policy).
    * topk: the reference model's top-k that constrains the fluency input and the decoding (10).
    * noise_schedule: transient noise std per iteration range, added to Z for the next forward pass only.
    * patience: stop a prompt after this many iterations without a better hard reward in any chain (100).
    * decode_topk: how a chain's tokens are read from Z each iteration. ``"prefix"`` (the released
      ``decode_with_model_topk``): left to right, token t is the argmax of Z_t among pi_ref's top-k next tokens
      given the decoded prefix; it stays in the "without reference" ablation, as in the released scripts.
      ``"previous"``: the argmax of Z + the top-k mask of the previous iteration's noisy inputs (this project's
      first implementation; its records keep this value).
    * rewrite: let the base model rewrite each chain's best text; the final pick is then the reward argmax over
      the 2C candidates.
    * rewrite_prompt: ``"no-question"`` (the released mode A prompt carries only the response) or
      ``"with-question"`` (the request too, this project's first implementation).
    * rewrite_tokens: the rewrite's cap in tokens (256: long enough that rewrites of 50-token answers finish; a
      candidate records ``cut`` when it hits the cap). 0 = the response ``length`` (the first implementation).

    The defaults follow the released scripts for the 1B SFT policy (``noise_schedule`` on); the 1B-base script sets
    every noise std to 0 (pass ``use_noise=False``).
    """

    recipe: str = "langevin"
    num_chains: int = 4
    length: int = 50
    steps: int = 200
    init: str = "policy"
    init_sample_temp: float = 0.8
    init_temp: float = 5.0
    init_keep_sample: bool = False
    init_margin: float = 1.0
    init_fixed_length: bool = False
    use_reward: bool = True
    use_reference: bool = True
    use_noise: bool = True
    mask_special: bool = True
    select: str = "last"
    seed: int = 0
    # langevin
    alpha: float = 500.0
    step_size: float = 0.01
    noise_scale: float = 1.0
    st_tau: float = 1.0
    # reference
    lr: float = 0.1
    reward_weight: float = 1.0
    fluency_weight: float = 0.1
    reward_temp: float = 0.1
    topk: int = 10
    noise_schedule: tuple[tuple[int, float], ...] = REFERENCE_NOISE_SCHEDULE
    patience: int = 100
    rewrite: bool = False
    decode_topk: str = "prefix"
    rewrite_prompt: str = "no-question"
    rewrite_tokens: int = 256
    track_soft_reward: bool = True
    # dlp
    dlp_step: float = 0.5
    dlp_block: int = 0
    mh_correction: bool = True

    def __post_init__(self):
        problems = []
        if self.recipe not in RECIPES:
            problems.append(f"recipe={self.recipe!r} (choose one of {RECIPES})")
        if self.init not in ("policy", "random"):
            problems.append(f"init={self.init!r} (choose 'policy' or 'random')")
        if self.select not in ("last", "best"):
            problems.append(f"select={self.select!r} (choose 'last' or 'best')")
        for name in ("num_chains", "length", "steps"):
            if not isinstance(getattr(self, name), int) or getattr(self, name) < 1:
                problems.append(f"{name}={getattr(self, name)!r} (must be a positive integer)")
        for name in ("step_size", "lr", "st_tau", "reward_temp", "init_temp", "init_sample_temp", "dlp_step"):
            if not getattr(self, name) > 0:
                problems.append(f"{name}={getattr(self, name)!r} (must be > 0)")
        if self.decode_topk not in ("prefix", "previous"):
            problems.append(f"decode_topk={self.decode_topk!r} (choose 'prefix' or 'previous')")
        if self.rewrite_prompt not in ("no-question", "with-question"):
            problems.append(f"rewrite_prompt={self.rewrite_prompt!r} (choose 'no-question' or 'with-question')")
        if not isinstance(self.rewrite_tokens, int) or self.rewrite_tokens < 0:
            problems.append(f"rewrite_tokens={self.rewrite_tokens!r} (must be 0, for the response length, or more)")
        if not isinstance(self.dlp_block, int) or self.dlp_block < 0:
            problems.append(f"dlp_block={self.dlp_block!r} (must be 0, for all positions, or a positive integer)")
        if self.noise_scale < 0:
            problems.append(f"noise_scale={self.noise_scale} (must be >= 0)")
        if problems:
            raise ValueError("Invalid SEAConfig: " + "; ".join(problems))

    @classmethod
    def paper(cls, **overrides) -> "SEAConfig":
        """The paper's form: Langevin dynamics on the energy (best-of-chains by reward at the end)."""
        return replace(cls(recipe="langevin"), **overrides)

    @classmethod
    def released_code(cls, **overrides) -> "SEAConfig":
        """The authors' released code: Adam, detached fluency, top-k masks, best iterate, rewrite step."""
        return replace(cls(recipe="reference", select="best", rewrite=True), **overrides)

    @classmethod
    def exact_mcmc(cls, **overrides) -> "SEAConfig":
        """The MH-corrected recipe: discrete Langevin proposals on U, accepted or rejected (targets pi* exactly)."""
        return replace(cls(recipe="dlp"), **overrides)

    def replace(self, **overrides) -> "SEAConfig":
        return replace(self, **overrides)

    def to_dict(self) -> dict:
        return asdict(self)

    def noise_std(self, iteration: int) -> float:
        """Transient noise std of the ``reference`` recipe at ``iteration`` (0 when noise is off)."""
        if not self.use_noise:
            return 0.0
        for until, std in self.noise_schedule:
            if iteration < until:
                return std
        return self.noise_schedule[-1][1] if self.noise_schedule else 0.0
