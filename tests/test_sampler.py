"""The SEA sampler on a tiny random model: ablation switches, reproducibility, errors, performance musts."""

import math

import pytest
import torch

from conftest import DEVICE, tiny_lm
from sea_minimal import SEA, Policy, SEAConfig, VocabMismatchError, VocabReward

PROMPT = [3, 1, 4, 1, 5]
SMALL = dict(num_chains=3, length=5, steps=6, seed=0)


def run(policy, reward, **overrides):
    return SEA(policy, reward, SEAConfig(**{**SMALL, **overrides})).run([PROMPT], progress=False)[0]


def without_wall_time(result):
    d = result.to_dict()
    d.pop("wall_time")
    d["compute"] = {k: v for k, v in d["compute"].items() if k not in ("wall_time", "peak_memory_mib")}
    nan_free = lambda rows: [[None if math.isnan(v) else v for v in row] for row in rows]  # NaN != NaN
    d["trajectory"] = {k: nan_free(v) for k, v in d["trajectory"].items() if k != "wall_time"}
    return d


RECIPES = ["langevin", "reference", "dlp"]
NOT_RECORDED = {"langevin": {"accept"}, "reference": {"accept"}, "dlp": {"reward_soft"}}  # NaN by design


@pytest.mark.parametrize("recipe", RECIPES)
def test_result_shapes_and_finite_values(tiny_policy, tiny_reward, recipe):
    res = run(tiny_policy, tiny_reward, recipe=recipe)
    assert len(res.texts) == 3 and len(res.candidates) == 3 and res.iterations == 6
    assert all(len(c["token_ids"]) == 5 for c in res.candidates)
    for key, values in res.trajectory.items():
        assert len(values) == 6 and all(len(row) == 3 for row in values), key
        if key in NOT_RECORDED[recipe]:
            assert all(math.isnan(v) for row in values for v in row), key
        else:
            assert all(math.isfinite(v) for row in values for v in row), key
    assert len(res.kl_per_position) == 3 and len(res.kl_per_position[0]) == 5
    assert res.text == res.candidates[res.selected]["text"]
    assert res.candidates[res.selected]["reward"] == max(c["reward"] for c in res.candidates)
    assert res.versions["torch"] == torch.__version__ and res.config["recipe"] == recipe


@pytest.mark.parametrize("recipe", RECIPES)
def test_same_seed_same_result(tiny_policy, tiny_reward, recipe):
    extra = {"alpha": 1.0} if recipe == "dlp" else {}  # at alpha 500 every dlp chain jumps to the one optimum
    a = run(tiny_policy, tiny_reward, recipe=recipe, **extra)
    b = run(tiny_policy, tiny_reward, recipe=recipe, **extra)
    assert without_wall_time(a) == without_wall_time(b)
    c = run(tiny_policy, tiny_reward, recipe=recipe, seed=1, **extra)
    assert c.trajectory["energy"] != a.trajectory["energy"]


def test_langevin_energy_is_minus_logp_minus_alpha_reward(tiny_policy, tiny_reward):
    for alpha in (0.5, 3.0):
        res = run(tiny_policy, tiny_reward, alpha=alpha)
        for U, lp, r in zip(res.trajectory["energy"], res.trajectory["logp_ref"], res.trajectory["reward_hard"]):
            for u, l, rr in zip(U, lp, r):
                assert u == pytest.approx(-(l + alpha * rr), rel=1e-5, abs=1e-5)


def test_langevin_ablation_switches_change_the_energy(tiny_policy, tiny_reward):
    no_reward = run(tiny_policy, tiny_reward, use_reward=False)
    for U, lp in zip(no_reward.trajectory["energy"], no_reward.trajectory["logp_ref"]):
        assert U == pytest.approx([-v for v in lp])
    no_ref = run(tiny_policy, tiny_reward, use_reference=False, alpha=2.0)
    for U, r in zip(no_ref.trajectory["energy"], no_ref.trajectory["reward_hard"]):
        assert U == pytest.approx([-2.0 * v for v in r])
    no_noise = run(tiny_policy, tiny_reward, use_noise=False)
    assert all(v == 0 for row in no_noise.trajectory["noise"] for v in row)


@pytest.mark.parametrize("recipe", RECIPES)
def test_nothing_moves_without_reward_reference_and_noise(tiny_policy, tiny_reward, recipe):
    """With all three forces off, Z must stay at its initial value: any leak shows as a KL or a text change."""
    res = run(tiny_policy, tiny_reward, recipe=recipe, use_reward=False, use_reference=False, use_noise=False)
    assert all(v == 0 for row in res.trajectory["kl_init"] for v in row)
    assert res.texts == res.initial_texts


def test_reward_pulls_toward_high_reward_tokens(tiny_policy, tiny_reward):
    """Reward only, no noise: gradient steps must raise the reward of a random start (the reward is linear)."""
    res = run(tiny_policy, tiny_reward, use_reference=False, use_noise=False, init="random", alpha=1.0,
              step_size=1.0, steps=20)
    assert sum(res.rewards) > sum(res.initial_rewards) + 1.0
    ref = run(tiny_policy, tiny_reward, recipe="reference", use_reference=False, use_noise=False, init="random",
              steps=20, lr=0.5)
    assert sum(ref.rewards) > sum(ref.initial_rewards) + 1.0


def test_num_chains_length_and_steps_fields(tiny_policy, tiny_reward):
    res = run(tiny_policy, tiny_reward, num_chains=1, length=2, steps=3)
    assert len(res.texts) == 1 and len(res.candidates[0]["token_ids"]) == 2 and len(res.trajectory["energy"]) == 3


def test_init_policy_vs_random(tiny_policy, tiny_reward):
    gen = torch.Generator(device=DEVICE).manual_seed(0)
    from sea_minimal.lm import encode_prompt

    cache = encode_prompt(tiny_policy.model, torch.tensor(PROMPT, device=DEVICE))
    rnd = SEA(tiny_policy, tiny_reward, SEAConfig(init="random", num_chains=64, length=8))._initial_logits(cache, gen)
    assert abs(rnd.mean().item()) < 0.05 and abs(rnd.std().item() - 1) < 0.05
    pol = SEA(tiny_policy, tiny_reward, SEAConfig(init="policy", num_chains=4, length=8, init_temp=5.0))
    z0 = pol._initial_logits(cache, gen)
    # policy init = teacher-forced logits / init_temp: position 0 is the prompt's next-token logits / 5
    torch.testing.assert_close(z0[:, 0], (cache.next_logits / 5.0).expand(4, -1))


def test_select_best_keeps_the_best_iterate(tiny_policy, tiny_reward):
    res = run(tiny_policy, tiny_reward, recipe="reference", select="best", steps=8)
    for c in range(3):
        assert res.rewards[c] == pytest.approx(max(row[c] for row in res.trajectory["reward_hard"]))


def test_reference_patience_stops_early(tiny_policy):
    flat = VocabReward(torch.zeros(11, device=DEVICE))
    res = run(tiny_policy, flat, recipe="reference", steps=50, patience=3)
    assert res.iterations == 4  # improvement at iteration 0, then 3 iterations without one


class HardMinusInfReward(VocabReward):
    """Soft inputs score as a flat vocabulary reward; hard (one-hot) inputs score -inf, so no iterate ever improves
    on the initial best of -inf."""

    def for_prompt(self, prompt_ids):
        soft = super().for_prompt(prompt_ids)

        def score(probs):
            hard = (probs.max(-1).values == 1).all(-1)
            return torch.where(hard, torch.full_like(soft(probs), -math.inf), soft(probs))

        return score


def test_reference_patience_counts_from_the_start_when_nothing_ever_improves(tiny_policy):
    # The patience counter starts at iteration 0: with no improvement at all the run stops after patience + 1
    # iterations (0 ... patience), not one later, and does not fail.
    res = run(tiny_policy, HardMinusInfReward(torch.zeros(11, device=DEVICE)), recipe="reference", steps=50, patience=3)
    assert res.iterations == 4
    assert all(r == -math.inf for row in res.trajectory["reward_hard"] for r in row)


def test_special_tokens_never_appear(tiny_policy, tiny_reward):
    tiny_policy.__dict__["special_ids"] = [9, 10]  # the two highest-reward tokens
    for recipe in RECIPES:
        res = run(tiny_policy, tiny_reward, recipe=recipe, init="random", steps=10)
        assert not any(t in (9, 10) for c in res.candidates for t in c["token_ids"])


def test_vocabulary_mismatch_names_both_sizes(tiny_policy):
    with pytest.raises(VocabMismatchError, match=r"12 tokens.*11"):
        SEA(tiny_policy, VocabReward(torch.zeros(12)), SEAConfig())


@pytest.mark.parametrize("bad", [dict(length=0), dict(steps=0), dict(num_chains=0), dict(recipe="adam"),
                                 dict(step_size=0.0), dict(init="zeros")])
def test_bad_config_is_rejected_with_a_clear_message(bad):
    key = next(iter(bad))
    with pytest.raises(ValueError, match=key):
        SEAConfig(**bad)


def test_empty_prompt_is_rejected(tiny_policy, tiny_reward):
    sea = SEA(tiny_policy, tiny_reward, SEAConfig(**SMALL))
    with pytest.raises(ValueError, match="empty"):
        sea.run([[]], progress=False)
    with pytest.raises(ValueError, match="No prompts"):
        sea.run([], progress=False)


@pytest.mark.parametrize("recipe,knob", [("langevin", "step_size"), ("reference", "lr")])
def test_divergence_raises_instead_of_returning_nan(tiny_policy, tiny_reward, recipe, knob):
    with pytest.raises(FloatingPointError, match=knob):
        run(tiny_policy, tiny_reward, recipe=recipe, **{knob: 1e38}, alpha=1e38, reward_weight=1e38)


def test_logits_stay_float32_with_a_bf16_model(tiny_reward):
    policy = Policy(tiny_lm(dtype=torch.bfloat16), tokenizer=None)
    seen = []
    inner = tiny_reward.for_prompt

    def spy(prompt_ids):
        score = inner(prompt_ids)
        return lambda tokens: (seen.append(tokens.dtype), score(tokens))[1]

    tiny_reward.for_prompt = spy
    for recipe in ("langevin", "reference"):
        res = run(policy, tiny_reward, recipe=recipe, steps=2)
        assert all(math.isfinite(v) for row in res.trajectory["logp_ref"] for v in row)
    assert seen and set(seen) == {torch.float32}


class ForwardLog:
    """Records every forward call of a model: batch size, number of new positions, grad mode."""

    def __init__(self, model):
        self.calls = []
        model.register_forward_pre_hook(self.hook, with_kwargs=True)

    def hook(self, module, args, kwargs):
        x = kwargs.get("input_ids")
        x = kwargs.get("inputs_embeds") if x is None else x
        self.calls.append((x.shape[0], x.shape[1], torch.is_grad_enabled()))


@pytest.mark.parametrize("recipe", ["langevin", "reference"])
def test_prompt_encoded_once_and_chains_batched(tiny_policy, tiny_reward, recipe):
    log = ForwardLog(tiny_policy.model)
    run(tiny_policy, tiny_reward, recipe=recipe, init="random", use_noise=True, decode_topk="previous")
    prompt_calls = [c for c in log.calls if c[1] == len(PROMPT)]
    assert len(prompt_calls) == 1  # the prompt goes through the model once per prompt
    loop_calls = log.calls[1:]
    assert len(loop_calls) == SMALL["steps"]  # one batched forward per iteration ...
    assert all(b == SMALL["num_chains"] and t == SMALL["length"] - 1 for b, t, _ in loop_calls)  # ... of all chains
    # langevin differentiates through pi_ref; the reference recipe's p_ref is a detached target
    assert all(grad == (recipe == "langevin") for _, _, grad in loop_calls)


def test_compute_accounting_matches_a_hand_count(tiny_policy, tiny_reward):
    """Langevin, random init: per iteration one forward of C x (T-1) tokens with gradient, C hard rewards
    in the loop (the straight-through forward) + C soft rewards; the final pick reuses the recorded rewards.
    The prompt (P tokens) is run once for the policy; the vocabulary reward has no model."""
    C, T, S, P = SMALL["num_chains"], SMALL["length"], SMALL["steps"], len(PROMPT)
    res = run(tiny_policy, tiny_reward, init="random")
    assert res.compute["forward_tokens"] == P + S * C * (T - 1)
    assert res.compute["backward_tokens"] == S * C * (T - 1)
    assert res.compute["reward_calls"] == C + S * 2 * C  # initial score, then hard + soft in the loop
    assert res.compute["wall_time"] > 0 and res.method == "sea-langevin"


def test_shared_backbone_reward_uses_one_forward_with_the_same_result(tiny_policy):
    """A reward head on the policy's own backbone: the langevin step's single joint forward must give exactly the
    trajectory that separate forwards for log pi_ref and the reward give, with one forward per iteration."""
    from sea_minimal.reward_model import BackboneReward, LinearHead

    hidden = tiny_policy.model.config.hidden_size
    gen = torch.Generator().manual_seed(0)
    head = LinearHead(weight=torch.randn(hidden, generator=gen), bias=torch.tensor(0.0),
                      mean=torch.zeros(hidden), std=torch.ones(hidden), pooling="mean")
    reward = BackboneReward(tiny_policy.model, head, suffix_ids=[10])
    log = ForwardLog(tiny_policy.model)
    shared = run(tiny_policy, reward, init="random", alpha=5.0, track_soft_reward=False)
    assert sum(1 for _, t, grad in log.calls if grad) == SMALL["steps"]  # one forward with gradient per iteration
    sea = SEA(tiny_policy, reward, SEAConfig(**SMALL, init="random", alpha=5.0, track_soft_reward=False))
    sea._shares_backbone = False  # force the two-forward path
    separate = sea.run([PROMPT], progress=False)[0]
    for key in ("energy", "logp_ref", "reward_hard"):
        torch.testing.assert_close(torch.tensor(shared.trajectory[key]), torch.tensor(separate.trajectory[key]),
                                   rtol=1e-4, atol=1e-4)
    assert shared.texts == separate.texts


def test_reference_topk_larger_than_vocabulary(tiny_policy, tiny_reward):
    res = run(tiny_policy, tiny_reward, recipe="reference", topk=50, steps=2)  # V = 11 < top-k
    assert res.iterations == 2


def test_first_iteration_evaluates_the_initial_state(tiny_policy, tiny_reward):
    res = run(tiny_policy, tiny_reward, steps=3)
    assert res.trajectory["kl_init"][0] == [0.0] * SMALL["num_chains"]


def test_init_keep_sample_starts_from_the_policy_sample(tiny_policy, tiny_reward):
    """With init_keep_sample the initial text is the pi_ref sample itself (same seed, same sample)."""
    from sea_minimal.lm import encode_prompt, sample_tokens

    res = run(tiny_policy, tiny_reward, init_keep_sample=True, steps=1)
    gen = torch.Generator(device=DEVICE).manual_seed(SMALL["seed"])
    cache = encode_prompt(tiny_policy.model, torch.tensor(PROMPT, device=DEVICE))
    tokens, _, _ = sample_tokens(tiny_policy.model, cache, SMALL["num_chains"], SMALL["length"], gen, temperature=0.8)
    assert res.initial_texts == [tiny_policy.decode(t) for t in tokens]


def test_init_fixed_length_starts_from_response_space_samples(tiny_policy, tiny_reward):
    tiny_policy.__dict__["special_ids"] = [9, 10]
    still = dict(steps=1, use_reward=False, use_reference=False, use_noise=False, num_chains=20, length=8,
                 init_keep_sample=True)
    res = run(tiny_policy, tiny_reward, recipe="dlp", init_fixed_length=True, **still)
    assert res.texts == res.initial_texts  # nothing moved: the chains are their initial samples
    tokens = [t for c in res.candidates for t in c["token_ids"]]
    assert len(tokens) == 160 and not any(t in (9, 10) for t in tokens)


def _topk_ranks(policy, prompt_ids, ids, mask=None):
    """For each position of each row of ids [C, T]: is the token in pi_ref's top-k after its own prefix (full
    forwards of prompt + prefix, no cache)? Returns the rank of the token among the next-token logits [C, T]."""
    full = torch.cat([prompt_ids[None].expand(ids.shape[0], -1), ids], 1)
    logits = policy.model(input_ids=full).logits[:, len(prompt_ids) - 1: -1].float()
    if mask is not None:
        logits = logits + mask
    return (logits > logits.gather(-1, ids[..., None])).sum(-1)


def test_topk_decode_picks_the_best_z_among_pi_refs_topk_after_the_decoded_prefix(tiny_policy):
    from sea_minimal.lm import encode_prompt, special_mask, topk_decode

    prompt = torch.tensor(PROMPT, device=DEVICE)
    cache = encode_prompt(tiny_policy.model, prompt)
    z = torch.randn(6, 7, tiny_policy.vocab_size, generator=torch.Generator().manual_seed(0)).to(DEVICE)
    mask = special_mask(tiny_policy.vocab_size, [0, 2], DEVICE)
    ids = topk_decode(tiny_policy.model, cache, z, 3, mask)
    assert ids.shape == (6, 7)
    ranks = _topk_ranks(tiny_policy, prompt, ids, mask)
    assert (ranks < 3).all() and not ((ids == 0) | (ids == 2)).any()
    # the chosen token has the largest z among the top-3 after its prefix
    full = torch.cat([prompt[None].expand(6, -1), ids], 1)
    logits = tiny_policy.model(input_ids=full).logits[:, len(PROMPT) - 1: -1].float() + mask
    top = logits.topk(3, -1).indices
    assert torch.equal(ids, top.gather(-1, z.gather(-1, top).argmax(-1, keepdim=True)).squeeze(-1))
    assert torch.equal(topk_decode(tiny_policy.model, cache, z, tiny_policy.vocab_size), z.argmax(-1))  # k = V


@pytest.mark.parametrize("use_reference", [True, False])
def test_reference_recipe_decodes_inside_pi_refs_topk_as_released(tiny_policy, tiny_reward, use_reference):
    res = run(tiny_policy, tiny_reward, recipe="reference", topk=2, steps=4, use_reference=use_reference)
    ids = torch.tensor([c["token_ids"] for c in res.candidates], device=DEVICE)
    assert (_topk_ranks(tiny_policy, torch.tensor(PROMPT, device=DEVICE), ids) < 2).all()
    old = run(tiny_policy, tiny_reward, recipe="reference", topk=2, steps=4, use_reference=use_reference,
              decode_topk="previous", init="random")
    old_ids = torch.tensor([c["token_ids"] for c in old.candidates], device=DEVICE)
    if not use_reference:  # the first implementation dropped the top-k with the reference term
        assert (_topk_ranks(tiny_policy, torch.tensor(PROMPT, device=DEVICE), old_ids) >= 2).any()


@pytest.mark.slow
@pytest.mark.parametrize("rewrite_prompt", ["no-question", "with-question"])
def test_rewrite_uses_the_chosen_prompt_and_records_a_cut(bundled_policy, rewrite_prompt, monkeypatch):
    from sea_minimal import demo_reward

    seen = []
    encode = bundled_policy.encode_prompt
    monkeypatch.setattr(bundled_policy, "encode_prompt", lambda text, **kw: seen.append(text) or encode(text, **kw))
    request = "How do I bake bread at home?"
    cfg = SEAConfig.released_code(num_chains=2, length=6, steps=1, rewrite_tokens=3, rewrite_prompt=rewrite_prompt)
    res = SEA(bundled_policy, demo_reward(bundled_policy), cfg).run([request], progress=False)[0]
    rewrites = [c for c in res.candidates if c["source"].startswith("rewrite")]
    assert len(rewrites) == 2 and all(c["cut"] and len(c["token_ids"]) <= 3 for c in rewrites)
    instructions = seen[1:]  # the first encode is the request itself
    assert len(instructions) == 2
    assert all((request in text) == (rewrite_prompt == "with-question") for text in instructions)


@pytest.mark.slow
def test_batched_rewrites_are_each_chains_own_greedy_rewrite(bundled_policy):
    from sea_minimal import demo_reward
    from sea_minimal.lm import decode, encode_prompt
    from sea_minimal.sampler import REWRITE_INSTRUCTION_NO_QUESTION

    cfg = SEAConfig.released_code(num_chains=3, length=5, steps=1, rewrite_tokens=12)
    res = SEA(bundled_policy, demo_reward(bundled_policy), cfg).run(["How do I bake bread at home?"], progress=False)[0]
    chains = {c["source"]: c for c in res.candidates if not c["source"].startswith("rewrite")}
    rewrites = [c for c in res.candidates if c["source"].startswith("rewrite")]
    assert len(rewrites) == 3
    model = bundled_policy.model
    for rewrite in rewrites:  # chains' instructions differ in length, so the batch was left-padded
        chain = chains[rewrite["source"].removeprefix("rewrite of ")]
        request = bundled_policy.encode_prompt(REWRITE_INSTRUCTION_NO_QUESTION.format(response=chain["text"]))
        alone = decode(model, encode_prompt(model, request), 1, 12, None, temperature=0.0,
                       stop_ids=bundled_policy.special_ids)
        assert rewrite["token_ids"] == alone.ids(0) and rewrite["cut"] == (not bool(alone.stopped[0]))


def test_align_is_sea_run_with_the_given_models_and_settings(tiny_policy, tiny_reward):
    from sea_minimal import align

    settings = dict(recipe="langevin", num_chains=2, length=4, steps=3, seed=1)
    got = align([[1, 2, 3]], policy=tiny_policy, reward=tiny_reward, progress=False, **settings)
    want = SEA(tiny_policy, tiny_reward, SEAConfig(**settings)).run([[1, 2, 3]], progress=False)
    assert [r.text for r in got] == [r.text for r in want] and got[0].config == want[0].config
