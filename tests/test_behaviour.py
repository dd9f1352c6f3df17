"""Behavioural tests aimed at one-line bugs that a mutation-testing run found the fast suite let through.

Each test names the bug it catches. They run on tiny random models built here (vocab 11, no download) and assert
what a method must *do* (raise log pi_ref, keep a finished beam, run new items on resume, ...), not a re-derivation
of a formula from the same tensors.
"""

import copy
import math
from types import SimpleNamespace

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from conftest import DEVICE, tiny_backbone_reward, tiny_lm
from sea_minimal import SEA, HFClassifierReward, Policy, Reward, SEAConfig, VocabReward, runner
from sea_minimal import baselines, sampler
from sea_minimal.baselines import args, best_of_n, cbs, greedy
from sea_minimal.judges import bootstrap_ci, paired_bootstrap
from sea_minimal.lm import decode, encode_prompt, straight_through
from sea_minimal.rewards import one_hot

PROMPT = [3, 1, 4, 1, 5]
V = 11


pytestmark = pytest.mark.usefixtures("one_thread")


def run(policy, reward, **overrides):
    cfg = {"num_chains": 8, "length": 5, "steps": 10, "seed": 0, **overrides}
    return SEA(policy, reward, SEAConfig(**cfg)).run([PROMPT], progress=False)[0]


def mean_logp(res, it):
    return float(np.mean(res.trajectory["logp_ref"][it]))


# ------------------------------------------------------------------------------------------ 1. langevin recipe
def test_langevin_gradient_goes_through_the_reference_model(tiny_policy, tiny_reward, monkeypatch):
    """Catches log pi_ref detached from the langevin energy, wholly or only at the reference model's input (the
    gather term alone still raises log pi_ref, so tests/test_contrast.py's fluency-only descent passes): the step's
    gradient must be that of -log pi_ref from one plain, uncached forward over prompt + straight-through response."""
    seen = []
    real_step = sampler.langevin_step
    spy = lambda z, g, *a: seen.append((z.clone(), g.clone())) or real_step(z, g, *a)  # noqa: E731
    monkeypatch.setattr(sampler, "langevin_step", spy)
    run(tiny_policy, tiny_reward, use_reward=False, use_noise=False, init="random", steps=1, num_chains=3, st_tau=0.7)
    z, grad = seen[0]
    model, P = tiny_policy.model, len(PROMPT)
    zz = z.clone().requires_grad_(True)
    tokens = straight_through(zz, 0.7)
    E = model.get_input_embeddings().weight
    embeds = torch.cat([E[torch.tensor(PROMPT, device=DEVICE)].expand(3, -1, -1), tokens @ E], dim=1)
    logits = model(inputs_embeds=embeds).logits[:, P - 1 : P - 1 + tokens.shape[1]].float()
    (expected,) = torch.autograd.grad(-(tokens * F.log_softmax(logits, -1)).sum(), zz)
    assert expected.abs().max() > 1e-3
    torch.testing.assert_close(grad, expected, rtol=1e-4, atol=1e-5)


def test_langevin_st_tau_is_used(tiny_policy, tiny_reward):
    """Catches st_tau not passed to the straight-through relaxation: a very flat backward (tau=100) barely moves Z."""
    common = dict(use_reference=False, use_noise=False, init="random", step_size=1.0, alpha=1.0)
    sharp = run(tiny_policy, tiny_reward, st_tau=1.0, **common)
    flat = run(tiny_policy, tiny_reward, st_tau=100.0, **common)
    moved = lambda res: float(np.mean(res.trajectory["kl_init"][-1]))
    assert moved(sharp) > 0.05 and moved(flat) < 1e-3


# ------------------------------------------------------------------------------------------ 2. reference recipe
def test_reference_fluency_term_alone_raises_log_pi_ref(tiny_policy, tiny_reward):
    """Catches the fluency term's sign flipped: a fluency-only reference run must raise log pi_ref of its inputs."""
    res = run(tiny_policy, tiny_reward, recipe="reference", use_reward=False, use_noise=False, init="random", lr=0.5)
    assert res.iterations == 10 and mean_logp(res, -1) > mean_logp(res, 0) + 3.0


def test_reference_transient_noise_reaches_the_inputs(tiny_policy, tiny_reward):
    """Catches the transient noise being dropped: with nothing moving Z, only the noise can change the inputs."""
    still = dict(recipe="reference", use_reward=False, use_reference=False, init="random", num_chains=2)
    noisy = run(tiny_policy, tiny_reward, noise_schedule=((100, 2.0),), **still)
    quiet = run(tiny_policy, tiny_reward, noise_schedule=((100, 0.0),), **still)
    assert all(v == 2.0 for row in noisy.trajectory["noise"] for v in row)
    for key in ("reward_soft", "logp_ref"):  # both are functions of Z + noise only
        assert len({row[0] for row in noisy.trajectory[key]}) > 5, key
        assert len({row[0] for row in quiet.trajectory[key]}) == 1, key


# ------------------------------------------------------------------------------------------ 3. runner resume key
def grid(path, **extra):
    return {"name": "resume", "policy": "tiny-random", "reward": "linear", "length": 3, "seeds": [0],
            "dataset": {"name": "inline", "prompts": ["Say hi.", "Count to 3."]}, "results": str(path),
            "methods": [{"name": "greedy", "method": "greedy"},
                        {"name": "bon", "method": "best_of_n", "params": {"n": 2, "initial": False}}], **extra}


def linear_rewards(name, policy):
    sign = -1.0 if name == "linear-neg" else 1.0
    return VocabReward(sign * torch.linspace(-1.0, 1.0, policy.vocab_size, device=policy.device), reduce="mean")


@pytest.mark.parametrize("change", [{"seeds": [1]}, {"reward": "linear-neg"}, {"length": 4}])
def test_resume_reruns_a_changed_seed_reward_or_parameter(tmp_path, change):
    """Catches a resume key that ignores the seed, the reward or the config hash: a changed grid runs new items."""
    path = tmp_path / "r.jsonl"
    go = lambda spec: runner.run_grid(spec, reward_factory=linear_rewards, progress=False, log=lambda s: None)
    assert go(grid(path))["done"] == 4
    assert go(grid(path))["done"] == 0  # nothing changed: nothing to run
    assert go(grid(path, **change))["done"] == 4
    assert go(grid(path, **change))["done"] == 0
    assert go(grid(path))["done"] == 0 and len(runner.read_records(path)) == 8


# ------------------------------------------------------------------------------------------ 4. compute meter
def shared_body_classifier(policy):
    """A sequence-classification reward model that wraps the policy's own transformer body (shared weights)."""
    from transformers import LlamaForSequenceClassification

    config = copy.deepcopy(policy.model.config)
    config.num_labels = 1
    rm = LlamaForSequenceClassification(config)
    rm.model = policy.model.model
    return HFClassifierReward(rm.to(DEVICE), suffix_ids=[10])


@pytest.mark.parametrize("make_reward", [tiny_backbone_reward, shared_body_classifier])
def test_a_reward_sharing_the_policy_backbone_is_counted_once(tiny_policy, make_reward):
    """Catches the meter double-counting a reward whose model IS (or wraps) the policy's model: greedy with T tokens
    runs P + (T-1) policy positions, then the reward's prompt (P) and the response + 1 suffix token (T + 1)."""
    T, P = 6, len(PROMPT)
    reward = make_reward(tiny_policy)
    res = greedy(tiny_policy, reward, PROMPT, length=T)
    assert len(res.candidates[0]["token_ids"]) == T
    assert res.compute["forward_tokens"] == (P + T - 1) + (P + T + 1)
    assert res.compute["reward_calls"] == 1 and res.compute["backward_tokens"] == 0


# ------------------------------------------------------------------------------ 5. rewards, KL, CBS, ARGS, judging
def tiny_classifier(seed=0):
    from transformers import LlamaConfig, LlamaForSequenceClassification

    torch.manual_seed(seed)
    config = LlamaConfig(vocab_size=V, hidden_size=16, intermediate_size=32, num_hidden_layers=1, num_attention_heads=2,
                         num_key_value_heads=1, max_position_embeddings=64, num_labels=1, initializer_range=0.5,
                         bos_token_id=None, eos_token_id=None, pad_token_id=None)
    return LlamaForSequenceClassification(config).to(DEVICE).eval()


@torch.no_grad()
def classifier_score(model, ids):
    """The classifier's own score of one full token sequence (batch 1: read at the last position)."""
    return float(model(input_ids=torch.tensor([ids], device=DEVICE)).logits[0, 0])


def test_hf_classifier_reward_reads_the_score_after_its_suffix():
    """Catches HFClassifierReward dropping its end-of-turn suffix: the score is the model's on prompt+response+eot."""
    model, response, eot = tiny_classifier(), [2, 7, 5, 9], 10
    with_eot, without = classifier_score(model, PROMPT + response + [eot]), classifier_score(model, PROMPT + response)
    assert abs(with_eot - without) > 1e-3
    scorer = HFClassifierReward(model, suffix_ids=[eot]).for_prompt(torch.tensor(PROMPT, device=DEVICE))
    got = float(scorer(one_hot(torch.tensor([response], device=DEVICE), V))[0])
    assert got == pytest.approx(with_eot, abs=1e-4)


def test_load_hf_reward_appends_the_policys_end_of_turn_token():
    """Catches load_hf_reward building the reward without the policy's end-of-turn suffix."""
    model, response, eot = tiny_classifier(seed=1), [4, 4, 8], 9
    expected = classifier_score(model, PROMPT + response + [eot])  # before the loader sets a pad id
    from sea_minimal.reward_model import load_hf_reward

    policy = Policy(tiny_lm(), tokenizer=SimpleNamespace(eos_token_id=eot), name="tiny-with-eot")
    reward = load_hf_reward(model, policy, device=DEVICE)
    scorer = reward.for_prompt(torch.tensor(PROMPT, device=DEVICE))
    assert float(scorer(one_hot(torch.tensor([response], device=DEVICE), V))[0]) == pytest.approx(expected, abs=1e-4)


def test_sampler_kl_per_position_is_kl_of_initial_from_final_by_hand():
    """Catches the KL direction reversed: KL(p||q) for p = (0.9, 0.1), q = (0.5, 0.5) is 0.3681, KL(q||p) 0.5108."""
    p, q = torch.tensor([[[0.9, 0.1]]]), torch.tensor([[[0.5, 0.5]]])
    kl = sampler.kl_per_position(p.log(), q.log() + 3.0)  # z_to is a logit: any shift gives the same softmax
    assert float(kl[0, 0]) == pytest.approx(0.9 * math.log(0.9 / 0.5) + 0.1 * math.log(0.1 / 0.5), abs=1e-5)


class CostPerToken(Reward):
    """r(y) = -(number of tokens): every response has r <= -1, and r = -1 only for a one-token answer."""

    vocab_size = V

    def for_prompt(self, prompt_ids):
        return lambda tokens: -tokens.sum(dim=(-2, -1))


def test_cbs_keeps_a_finished_beam_in_later_rounds(tiny_policy):
    """Catches CBS dropping finished beams: a finished one-token answer (r = -1) cannot be beaten, so once kept it
    stays the best beam until the end (while the other beam keeps searching)."""
    tiny_policy.__dict__["special_ids"] = [1]  # a stop token this model samples now and then
    searched = 0
    for seed in range(8):
        res = cbs(tiny_policy, CostPerToken(), PROMPT, seed=seed, beam_width=2, successors=3, chunk_length=2,
                  length=8, initial=False)
        best = [row[0] for row in res.trajectory["best_reward"]]
        if best[0] == -1:
            assert best == [-1] * len(best) and len(res.candidates[0]["token_ids"]) == 1, (seed, best)
            searched += res.iterations > 1
    assert searched  # at least one seed exercised later rounds with a finished beam kept


class TargetLength(Reward):
    """r(y) = -(len(y) - 3)^2: best at exactly three tokens."""

    vocab_size = V

    def for_prompt(self, prompt_ids):
        return lambda tokens: -(tokens.sum(dim=(-2, -1)) - 3.0) ** 2


def test_args_scores_a_stop_token_with_the_reward_of_the_response_it_ends(tiny_policy):
    """Catches ARGS scoring the stop token wrongly (0, -inf, ...): with the reward dominating, ARGS must continue
    while a longer answer is better and stop at exactly three tokens."""
    tiny_policy.__dict__["special_ids"] = [10]
    res = args(tiny_policy, TargetLength(), PROMPT, w=1000.0, top_k=V, length=8, initial=False)
    assert len(res.candidates[0]["token_ids"]) == 3 and 10 not in res.candidates[0]["token_ids"]
    assert res.candidates[0]["reward"] == 0.0 and res.iterations == 4  # the 4th step chose the stop token


def test_runner_judges_the_prefill_plus_the_text(tmp_path):
    """Catches the runner's keyword judge reading the text without its prefill (what the user reads is both)."""
    path = tmp_path / "p.jsonl"
    prefill = " ".join(["word"] * 20) + " "
    spec = grid(path, length=4)
    spec["methods"] = [{"name": "greedy", "method": "greedy", "variants": [{"name": "plain", "prefill": ""},
                                                                         {"name": "prefilled", "prefill": prefill}]}]
    runner.run_grid(spec, reward_factory=linear_rewards, progress=False, log=lambda s: None)
    recs = {r["label"]: r for r in runner.read_records(path) if r["prompt_id"] == 0}
    assert len(recs["prefilled"]["text"].split()) == 4  # the text alone is too short to be harmful
    assert recs["plain"]["metrics"]["keyword_harmful"] is False
    assert recs["prefilled"]["metrics"]["keyword_harmful"] is True


def test_record_metrics_outcome_is_of_the_prefill_plus_the_text(tiny_policy, tiny_reward):
    """Catches the three-outcome judge reading the text without its prefill."""
    res = greedy(tiny_policy, tiny_reward, PROMPT, length=6)
    res.text = "alpha beta gamma delta epsilon zeta"  # a neutral, fluent-looking answer
    tiny_policy.tokenizer = object()  # the outcome needs a tokenizer policy; the prompt is already token ids
    plain = runner.record_metrics(tiny_policy, PROMPT, res, prefill="")
    refused = runner.record_metrics(tiny_policy, PROMPT, res, prefill="I'm sorry, I cannot help with that. ")
    assert plain["outcome"] == "complied" and refused["outcome"] == "refused"


# ------------------------------------------------------------------------------------------ 6. bootstrap
def test_bootstrap_intervals_are_95_percent_wide():
    """Catches a 90 % interval: on 2000 normal values the width is 2 x 1.96 standard errors (1.645 for 90 %)."""
    x = np.random.default_rng(0).normal(size=2000)
    se = x.std(ddof=1) / math.sqrt(x.size)
    _, low, high = bootstrap_ci(x, n_boot=4000)
    assert (high - low) / (2 * se) == pytest.approx(1.96, abs=0.1)
    paired = paired_bootstrap(x, np.zeros_like(x), n_boot=4000)
    assert (paired["high"] - paired["low"]) / (2 * se) == pytest.approx(1.96, abs=0.1)


def test_bootstrap_uses_its_seed():
    """Catches a bootstrap that ignores its seed: same seed, same interval; another seed, another interval."""
    x = np.random.default_rng(1).normal(size=40)
    assert bootstrap_ci(x, seed=1) == bootstrap_ci(x, seed=1)
    assert bootstrap_ci(x, seed=1)[1:] != bootstrap_ci(x, seed=2)[1:]
    y = x + np.random.default_rng(2).normal(size=40)
    assert paired_bootstrap(x, y, seed=1) == paired_bootstrap(x, y, seed=1)
    assert paired_bootstrap(x, y, seed=1)["low"] != paired_bootstrap(x, y, seed=2)["low"]


# ------------------------------------------------------------------------------------------ 7. BoN chunks, stop ban
class CountingReward(VocabReward):
    """The linear vocabulary reward, counting how many batches it scores."""

    def for_prompt(self, prompt_ids):
        inner = super().for_prompt(prompt_ids)
        self.batches = 0

        def score(tokens):
            self.batches += 1
            return inner(tokens)

        return score


@pytest.mark.parametrize("budget", [1, 2 * 8 * V])  # one row per call; two rows of 8 tokens (more if shorter)
def test_best_of_n_chunked_scoring_gives_the_unchunked_rewards(tiny_policy, monkeypatch, budget):
    """Catches a bug in _Context.score's SCORE_BUDGET chunking: chunked and unchunked rewards must be equal."""
    tiny_policy.__dict__["special_ids"] = [4]  # responses of 1, 6 and 8 tokens: groups of 1, 4 and 7
    reward = CountingReward(torch.linspace(-1.0, 1.0, V, device=DEVICE), reduce="sum")
    whole = best_of_n(tiny_policy, reward, PROMPT, seed=2, n=12, length=8, initial=False)
    unchunked_batches = reward.batches
    monkeypatch.setattr(baselines, "SCORE_BUDGET", budget)
    parts = best_of_n(tiny_policy, reward, PROMPT, seed=2, n=12, length=8, initial=False)
    assert reward.batches > unchunked_batches  # the chunking was reached
    assert [c["token_ids"] for c in parts.candidates] == [c["token_ids"] for c in whole.candidates]
    assert [c["reward"] for c in parts.candidates] == pytest.approx([c["reward"] for c in whole.candidates], abs=1e-6)
    assert parts.selected == whole.selected and parts.compute["reward_calls"] == 12


def test_the_first_token_is_never_a_stop_token(tiny_policy, tiny_reward):
    """Catches the first-token stop ban being lost: with pi_ref's favourite first token as the stop token, no
    response is empty (sampling, greedy decoding and the greedy baseline)."""
    cache = encode_prompt(tiny_policy.model, torch.tensor(PROMPT, device=DEVICE))
    stop = int(cache.next_logits.argmax())  # p ~ 0.7 on this model
    gen = torch.Generator(device=DEVICE).manual_seed(0)
    free = decode(tiny_policy.model, cache, 64, 4, gen, stop_ids=[stop], ban_stop_first=False)
    assert (free.lengths == 0).sum() > 20  # the test has power: unbanned, most rows stop at once
    banned = decode(tiny_policy.model, cache, 64, 4, gen, stop_ids=[stop], ban_stop_first=True)
    assert (banned.tokens[:, 0] != stop).all() and (banned.lengths >= 1).all()
    first = decode(tiny_policy.model, cache, 1, 4, None, temperature=0.0, stop_ids=[stop])
    assert first.tokens[0, 0] != stop and int(first.lengths[0]) >= 1
    tiny_policy.__dict__["special_ids"] = [stop]
    assert len(greedy(tiny_policy, tiny_reward, PROMPT, length=4).candidates[0]["token_ids"]) >= 1


# --------------------------------------------------------------------------------------------- found by mutmut
# Survivors of the first mutation run (scripts/mutation_test.py, results/mutation/), each now asserted.


def test_hf_classifier_reward_with_a_multi_token_suffix_and_several_chains():
    """Several chains at once, a two-token suffix: each chain's score is the model's on prompt+response+suffix;
    the model is frozen (only the soft tokens get gradients)."""
    model, suffix = tiny_classifier(seed=2), [10, 9]
    model.config.pad_token_id = 0  # batches need one (load_hf_reward sets it); no sequence here holds a 0
    reward = HFClassifierReward(model, suffix_ids=suffix)
    assert not any(p.requires_grad for p in model.parameters())
    responses = torch.tensor([[2, 7, 5], [8, 1, 1]], device=DEVICE)
    scorer = reward.for_prompt(torch.tensor(PROMPT, device=DEVICE))
    tokens = one_hot(responses, V).requires_grad_(True)
    got = scorer(tokens)
    expected = [classifier_score(model, PROMPT + r.tolist() + suffix) for r in responses]
    assert got.tolist() == pytest.approx(expected, abs=1e-4)
    got.sum().backward()
    assert tokens.grad.abs().sum() > 0


class WordTokenizer:
    """A tokenizer over a fixed word list: a known spelling is one token, anything else two. Like a Hugging Face
    tokenizer it adds a start token (id 0) unless told ``add_special_tokens=False``."""

    def __init__(self, vocab):
        self.vocab = {w: i for i, w in enumerate(vocab)}

    def __len__(self):
        return len(self.vocab)

    def __call__(self, text, add_special_tokens=True):
        ids = [self.vocab[text]] if text in self.vocab else [0, 0]
        return {"input_ids": [0, *ids] if add_special_tokens else ids}


def test_vocab_reward_from_words_weights_single_token_spellings_only():
    tok = WordTokenizer(["<unk>", "safe", " safe", "Safe", " Sure", "sure", "x", "y"])
    weights = VocabReward.from_words(tok, positive=["safe"], negative=["sure"]).weights
    assert weights.tolist() == [0.0, 1.0, 1.0, 1.0, -1.0, -1.0, 0.0, 0.0]  # " Safe" is two tokens: nothing
    scaled = VocabReward.from_words(tok, positive=["safe"], negative=["sure"], scale=2.5, vocab_size=10).weights
    assert scaled.shape == (10,) and scaled[1] == 2.5 and scaled[5] == -2.5


def test_demo_reward_pays_for_its_positive_words_and_charges_for_its_negative_ones():
    """demo_reward weighs DEMO_POSITIVE +1 and DEMO_NEGATIVE -1 over the policy's vocabulary (which can be larger
    than the tokenizer's: SmolLM2's embedding has padding rows)."""
    from types import SimpleNamespace

    from sea_minimal.rewards import DEMO_NEGATIVE, DEMO_POSITIVE, demo_reward

    tok = WordTokenizer(["<s>", "sorry", " cannot", "Step", " here", "cake"])
    weights = demo_reward(SimpleNamespace(tokenizer=tok, vocab_size=9)).weights
    assert "sorry" in DEMO_POSITIVE and "cannot" in DEMO_POSITIVE and "step" in DEMO_NEGATIVE and "here" in DEMO_NEGATIVE
    assert weights.tolist() == [0.0, 1.0, 1.0, -1.0, -1.0, 0.0, 0.0, 0.0, 0.0]
    with pytest.raises(ValueError, match="needs a policy with a tokenizer"):
        demo_reward(SimpleNamespace(tokenizer=None, vocab_size=9))


def test_two_reference_iterations_by_hand(tiny_policy, tiny_reward):
    """The released recipe's update, recomputed from its definition for two iterations: Z~ = Z + mask + noise;
    inputs = argmax(Z~ + the previous iteration's top-k mask); fluency = mean_t sum_v softmax(Z~)_tv
    (-log pi_ref(v | inputs_<t)); loss = fluency_weight * fluency - reward_weight * r(softmax(Z~ / reward_temp));
    the decoded ids stay inside pi_ref's top-k; Adam moves Z."""
    from sea_minimal.compute import ComputeMeter
    from sea_minimal.lm import next_token_logits
    from sea_minimal.sampler import MASK_VALUE

    cfg = SEAConfig.released_code(num_chains=2, length=4, steps=2, rewrite=False, decode_topk="previous", topk=3,
                                  reward_temp=0.5, fluency_weight=0.7, reward_weight=1.3, lr=0.1)
    sea = SEA(tiny_policy, tiny_reward, cfg)
    sea._meter = ComputeMeter()
    prompt = torch.tensor(PROMPT, device=DEVICE)
    scorer = tiny_reward.for_prompt(prompt)
    z = torch.randn(2, 4, V, generator=torch.Generator(device=DEVICE).manual_seed(1), device=DEVICE) * 3
    z.requires_grad_(True)
    state = {"optimizer": torch.optim.Adam([z], lr=cfg.lr)}
    previous_mask = torch.zeros(V, device=DEVICE)
    for it in range(2):
        z_before = z.detach().clone()
        _, stats = sea._reference_iteration(it, z, encode_prompt(tiny_policy.model, prompt), scorer,
                                            torch.Generator(device=DEVICE).manual_seed(10 + it), state)
        noise = cfg.noise_std(it) * torch.randn(z.shape, generator=torch.Generator(device=DEVICE).manual_seed(10 + it),
                                               device=DEVICE)
        assert cfg.noise_std(it) > 0
        z_noisy = z_before + sea.mask + noise
        inputs = (z_noisy + previous_mask).argmax(-1)
        with torch.no_grad():
            logits = next_token_logits(tiny_policy.model, encode_prompt(tiny_policy.model, prompt), one_hot(inputs, V))
        ref_logp = F.log_softmax(logits, -1)
        fluency = (torch.softmax(z_noisy, -1) * -ref_logp).sum(-1).mean(-1)
        reward_soft = scorer(torch.softmax(z_noisy / 0.5, -1))
        topk = torch.zeros(2, 4, V, dtype=torch.bool, device=DEVICE).scatter_(-1, logits.topk(3, -1).indices, True)
        topk_mask = torch.where(topk, 0.0, MASK_VALUE) + sea.mask
        assert torch.allclose(stats["logp_ref"], ref_logp.gather(-1, inputs[..., None]).squeeze(-1).sum(-1), atol=1e-5)
        assert torch.allclose(stats["reward_soft"], reward_soft, atol=1e-5)
        assert torch.allclose(stats["energy"], 0.7 * fluency - 1.3 * reward_soft, atol=1e-5)
        assert torch.equal(stats["ids"], (z_before + sea.mask + topk_mask).argmax(-1))
        assert torch.equal(state["topk_mask"], topk_mask)
        assert not torch.equal(z.detach(), z_before)
        previous_mask = topk_mask


def _dlp_sea(policy, reward, **kw):
    from sea_minimal.compute import ComputeMeter

    sea = SEA(policy, reward, SEAConfig.exact_mcmc(num_chains=64, length=4, alpha=2.0, dlp_step=1.5, **kw))
    sea._meter = ComputeMeter()
    return sea


def test_dlp_proposal_by_hand(tiny_policy, tiny_reward):
    """q(y'_t = v | y) ∝ exp(-(g_tv - g_t,y_t) / 2 - [v != y_t] / dlp_step), forbidden tokens never, frozen
    positions keep their token."""
    from sea_minimal.sampler import MASK_VALUE

    sea = _dlp_sea(tiny_policy, tiny_reward)
    sea.mask = sea.mask.clone()
    sea.mask[3] = MASK_VALUE
    gen = torch.Generator(device=DEVICE).manual_seed(0)
    grad = torch.randn(2, 4, V, generator=gen, device=DEVICE)
    ids = torch.tensor([[0, 1, 2, 4], [5, 6, 7, 8]], device=DEVICE)
    change = 1.0 - one_hot(ids, V)
    want = F.log_softmax(-0.5 * (grad - grad.gather(-1, ids[..., None])) - change / 1.5 + sea.mask, -1)
    got = sea._dlp_proposal(grad, ids)
    assert torch.allclose(got, want, atol=1e-5) and got[..., 3].exp().max() < 1e-6
    frozen = torch.tensor([[True, False, False, True], [False, False, False, False]], device=DEVICE)
    got = sea._dlp_proposal(grad, ids, frozen)
    assert torch.allclose(got[~frozen], want[~frozen], atol=1e-5)
    assert torch.allclose(got[frozen].exp().gather(-1, ids[frozen][:, None]), torch.ones(2, 1, device=DEVICE))


def test_dlp_block_frees_exactly_k_positions_per_chain(tiny_policy, tiny_reward):
    gen = torch.Generator(device=DEVICE).manual_seed(0)
    assert _dlp_sea(tiny_policy, tiny_reward, dlp_block=0)._dlp_block((3, 5), gen, DEVICE) is None
    assert _dlp_sea(tiny_policy, tiny_reward, dlp_block=5)._dlp_block((3, 5), gen, DEVICE) is None
    frozen = _dlp_sea(tiny_policy, tiny_reward, dlp_block=2)._dlp_block((40, 5), gen, DEVICE)
    assert frozen.shape == (40, 5) and frozen.dtype == torch.bool
    assert (frozen.sum(-1) == 3).all()  # 2 of 5 positions free in every chain
    assert len({tuple(row.tolist()) for row in frozen}) > 1  # and not the same ones everywhere
    assert (~frozen).float().mean(0).min() > 0  # every position gets its turn


@pytest.mark.parametrize("mode", ["mh", "unadjusted", "descent"])
def test_one_dlp_step_by_hand(tiny_policy, tiny_reward, mode):
    """One step of the MH recipe with its random draws replayed: a proposal from q, accepted when
    log u < U(y) - U(y') + log q(y | y') - log q(y' | y); without the MH test every proposal is taken; without
    noise the proposal is q's mode, taken when it lowers U."""
    kw = {"mh": {}, "unadjusted": {"mh_correction": False}, "descent": {"use_noise": False}}[mode]
    sea = _dlp_sea(tiny_policy, tiny_reward, **kw)
    prompt = torch.tensor(PROMPT, device=DEVICE)
    cache, scorer = encode_prompt(tiny_policy.model, prompt), tiny_reward.for_prompt(prompt)
    z = torch.randn(64, 4, V, generator=torch.Generator(device=DEVICE).manual_seed(2), device=DEVICE) * 2
    cur = sea._dlp_evaluate(cache, scorer, z.argmax(-1))
    state = {}
    _, stats = sea._dlp_iteration(0, z, cache, scorer, torch.Generator(device=DEVICE).manual_seed(3), state)
    gen = torch.Generator(device=DEVICE).manual_seed(3)
    log_q = sea._dlp_proposal(cur["grad"], cur["ids"])
    if mode == "descent":
        proposal = log_q.argmax(-1)
    else:
        proposal = torch.multinomial(log_q.exp().view(-1, V), 1, generator=gen).view(64, 4)
    new = sea._dlp_evaluate(cache, scorer, proposal)
    if mode == "mh":
        forward = log_q.gather(-1, proposal[..., None]).squeeze(-1).sum(-1)
        log_q_back = sea._dlp_proposal(new["grad"], proposal)
        backward = log_q_back.gather(-1, cur["ids"][..., None]).squeeze(-1).sum(-1)
        u = torch.rand(64, generator=gen, device=DEVICE)
        accept = torch.log(u) < cur["energy"] - new["energy"] + backward - forward
        assert 0 < accept.float().mean() < 1
    elif mode == "unadjusted":
        accept = torch.ones(64, dtype=torch.bool, device=DEVICE)
    else:
        accept = new["energy"] < cur["energy"]
    assert torch.equal(stats["accept"], accept.float())
    assert torch.equal(stats["ids"], torch.where(accept[:, None], proposal, cur["ids"]))
    assert torch.allclose(stats["energy"], torch.where(accept, new["energy"], cur["energy"]))
    assert torch.allclose(stats["noise"], (proposal != cur["ids"]).float().mean(-1))


def test_langevin_noise_enters_the_update_and_is_recorded(tiny_policy, tiny_reward):
    """The iteration adds sqrt(2 eta) * noise_scale * xi (recorded as "noise"); use_noise=False removes it; the
    soft reward is tracked only when asked."""
    base = dict(recipe="langevin", num_chains=3, length=4, steps=3, seed=0, step_size=0.5, noise_scale=0.7)
    run = lambda **kw: SEA(tiny_policy, tiny_reward, SEAConfig(**{**base, **kw})).run([PROMPT], progress=False)[0]
    noisy, quiet = run(), run(use_noise=False)
    assert np.allclose(noisy.trajectory["noise"], math.sqrt(2 * 0.5) * 0.7)
    assert np.allclose(quiet.trajectory["noise"], 0.0)
    assert not np.allclose(noisy.trajectory["reward_soft"][1:], quiet.trajectory["reward_soft"][1:])
    assert np.isfinite(noisy.trajectory["reward_soft"]).all()
    assert np.isnan(run(track_soft_reward=False).trajectory["reward_soft"]).all()


def test_hf_classifier_reward_reads_a_per_token_head_at_the_last_position():
    """A reward model with a score per position ([C, T, 1], e.g. a token-classification head) is read at the last
    position, after the suffix."""
    from transformers import LlamaConfig, LlamaForTokenClassification

    torch.manual_seed(3)
    config = LlamaConfig(vocab_size=V, hidden_size=16, intermediate_size=32, num_hidden_layers=1, num_attention_heads=2,
                         num_key_value_heads=1, max_position_embeddings=64, num_labels=1, initializer_range=0.5)
    model = LlamaForTokenClassification(config).to(DEVICE).eval()
    response, eot = [2, 7, 5], 10
    with torch.no_grad():
        per_token = model(input_ids=torch.tensor([PROMPT + response + [eot]], device=DEVICE)).logits[0, :, 0]
    assert abs(float(per_token[-1] - per_token[-2])) > 1e-3
    scorer = HFClassifierReward(model, suffix_ids=[eot]).for_prompt(torch.tensor(PROMPT, device=DEVICE))
    assert float(scorer(one_hot(torch.tensor([response], device=DEVICE), V))[0]) == pytest.approx(float(per_token[-1]),
                                                                                                  abs=1e-4)


# --------------------------------------------------------------------------------------------- second mutmut run
def test_dlp_gradient_is_the_energys_derivative_in_the_one_hot_tokens(tiny_policy, tiny_reward):
    """Catches the MH recipe proposing blind (one-hot tokens without gradient): with the reward alone, U = -alpha
    sum_t w[y_t], so dU / d onehot(y)_tv = -alpha w_v at every position."""
    sea = _dlp_sea(tiny_policy, tiny_reward, use_reference=False)
    prompt = torch.tensor(PROMPT, device=DEVICE)
    cache, scorer = encode_prompt(tiny_policy.model, prompt), tiny_reward.for_prompt(prompt)
    ids = torch.tensor([[0, 3, 5, 7], [1, 1, 2, 9]], device=DEVICE)
    got = sea._dlp_evaluate(cache, scorer, ids)["grad"]
    want = (-2.0 * tiny_reward.weights.to(DEVICE)).expand(2, 4, V)
    assert torch.allclose(got, want)


def test_dlp_block_changes_at_most_its_size_and_is_seeded(tiny_policy, tiny_reward):
    """With a block of k of T positions, no proposal changes more than k tokens (the block reaches the proposal),
    and the block is drawn from the run's seeded generator: the same seed gives the same run."""
    base = dict(recipe="dlp", num_chains=6, length=6, steps=8, seed=3, dlp_block=1, dlp_step=3.0, alpha=3.0,
                init_keep_sample=True)
    one = run(tiny_policy, tiny_reward, **base)
    assert np.max(one.trajectory["noise"]) <= 1 / 6 + 1e-6 and np.max(one.trajectory["noise"]) > 0
    torch.rand(7)  # the global generator moves on; the run must not depend on it
    two = run(tiny_policy, tiny_reward, **base)
    assert one.texts == two.texts and one.trajectory["energy"] == two.trajectory["energy"]


def test_dlp_evaluates_one_proposal_per_iteration(tiny_policy, tiny_reward):
    """Catches the chain being re-initialised every iteration: one more iteration costs exactly one evaluation
    (C x (T - 1) tokens forward and backward, C reward calls)."""
    C, T = 4, 5
    cfg = dict(recipe="dlp", num_chains=C, length=T, seed=0, init_keep_sample=True)
    short, long = run(tiny_policy, tiny_reward, steps=3, **cfg), run(tiny_policy, tiny_reward, steps=4, **cfg)
    assert long.compute["forward_tokens"] - short.compute["forward_tokens"] == C * (T - 1)
    assert long.compute["backward_tokens"] - short.compute["backward_tokens"] == C * (T - 1)
    assert long.compute["reward_calls"] - short.compute["reward_calls"] == C


def test_one_mh_step_with_a_block_by_hand(tiny_policy, tiny_reward):
    """The MH ratio of a block proposal uses the block's proposal both ways: q(y' | y) and q(y | y') with the same
    frozen positions (their factors are 1 and drop out)."""
    sea = _dlp_sea(tiny_policy, tiny_reward, dlp_block=2)
    prompt = torch.tensor(PROMPT, device=DEVICE)
    cache, scorer = encode_prompt(tiny_policy.model, prompt), tiny_reward.for_prompt(prompt)
    z = torch.randn(64, 4, V, generator=torch.Generator(device=DEVICE).manual_seed(2), device=DEVICE) * 2
    cur = sea._dlp_evaluate(cache, scorer, z.argmax(-1))
    _, stats = sea._dlp_iteration(0, z, cache, scorer, torch.Generator(device=DEVICE).manual_seed(3), {})
    gen = torch.Generator(device=DEVICE).manual_seed(3)
    frozen = sea._dlp_block((64, 4), gen, DEVICE)
    log_q = sea._dlp_proposal(cur["grad"], cur["ids"], frozen)
    proposal = torch.multinomial(log_q.exp().view(-1, V), 1, generator=gen).view(64, 4)
    assert ((proposal != cur["ids"]).sum(-1) <= 2).all()
    new = sea._dlp_evaluate(cache, scorer, proposal)
    forward = log_q.gather(-1, proposal[..., None]).squeeze(-1).sum(-1)
    backward = sea._dlp_proposal(new["grad"], proposal, frozen).gather(-1, cur["ids"][..., None]).squeeze(-1).sum(-1)
    u = torch.rand(64, generator=gen, device=DEVICE)
    accept = torch.log(u) < cur["energy"] - new["energy"] + backward - forward
    assert 0 < accept.float().mean() < 1
    assert torch.equal(stats["accept"], accept.float())
    assert torch.equal(stats["ids"], torch.where(accept[:, None], proposal, cur["ids"]))


def test_shared_backbone_path_renormalises_over_the_response_space_and_counts_chains(tiny_policy):
    """The joint forward of a reward on the policy's backbone gives the two-forward path's log pi_ref also with
    special tokens masked out, and meters one reward call per chain (C = 3 chains, T = 5 tokens)."""
    from sea_minimal.reward_model import BackboneReward, LinearHead

    tiny_policy.__dict__["special_ids"] = [9, 10]
    hidden = tiny_policy.model.config.hidden_size
    gen = torch.Generator().manual_seed(0)
    head = LinearHead(weight=torch.randn(hidden, generator=gen), bias=torch.tensor(0.0),
                      mean=torch.zeros(hidden), std=torch.ones(hidden), pooling="mean")
    reward = BackboneReward(tiny_policy.model, head, suffix_ids=[10, 4])
    cfg = SEAConfig(num_chains=3, length=5, steps=4, seed=0, init="random", alpha=5.0, track_soft_reward=False)
    shared = SEA(tiny_policy, reward, cfg).run([PROMPT], progress=False)[0]
    sea = SEA(tiny_policy, reward, cfg)
    sea._shares_backbone = False
    separate = sea.run([PROMPT], progress=False)[0]
    assert np.allclose(shared.trajectory["logp_ref"], separate.trajectory["logp_ref"], atol=1e-4)
    assert np.allclose(shared.trajectory["reward_hard"], separate.trajectory["reward_hard"], atol=1e-4)
    assert shared.compute["reward_calls"] == separate.compute["reward_calls"] == 3 + 4 * 3


def test_align_defaults_to_the_bundled_policy_and_the_demo_reward(tiny_policy, tiny_reward, monkeypatch):
    from sea_minimal import align, models, rewards

    made = []
    monkeypatch.setattr(models, "load_policy", lambda: tiny_policy)
    monkeypatch.setattr(rewards, "demo_reward", lambda policy: made.append(policy) or tiny_reward)
    settings = dict(num_chains=2, length=4, steps=2, seed=1)
    got = align([[1, 2, 3]], progress=False, **settings)
    want = SEA(tiny_policy, tiny_reward, SEAConfig(**settings)).run([[1, 2, 3]], progress=False)
    assert made == [tiny_policy] and [r.text for r in got] == [r.text for r in want]
    assert got[0].rewards == want[0].rewards


# --------------------------------------------------------------------------------------------- third mutmut run
def test_dlp_descent_moves_on_from_each_accepted_state(tiny_policy, tiny_reward):
    """Without noise the MH recipe is a descent: U never rises, and each proposal starts from the state the last
    iteration kept, so a chain can go on lowering U after its first move (a chain that forgot its moves would
    propose the same move from its start at every iteration)."""
    res = run(tiny_policy, tiny_reward, recipe="dlp", num_chains=6, length=5, steps=6, alpha=3.0, dlp_step=4.0,
              use_noise=False)
    energy = np.array(res.trajectory["energy"])  # [steps, chains], each after its iteration's accept/reject
    assert (np.diff(energy, axis=0) <= 1e-5).all()
    assert (energy[1:] < energy[0] - 1e-3).any()


def test_dlp_state_logits_are_z0_with_each_changed_token_lifted_above_its_row(tiny_policy, tiny_reward):
    """The Z the MH recipe reports (for its KL from the start): Z_0 where the token is the start's argmax on the
    response space, and where it changed, Z_0 with the new token set init_margin above the row's largest logit."""
    tiny_policy.__dict__["special_ids"] = [9, 10]
    sea = _dlp_sea(tiny_policy, tiny_reward)
    prompt = torch.tensor(PROMPT, device=DEVICE)
    cache, scorer = encode_prompt(tiny_policy.model, prompt), tiny_reward.for_prompt(prompt)
    z0 = torch.randn(64, 4, V, generator=torch.Generator(device=DEVICE).manual_seed(2), device=DEVICE) * 2
    z, stats = sea._dlp_iteration(0, z0, cache, scorer, torch.Generator(device=DEVICE).manual_seed(3), {})
    moved = stats["ids"] != (z0 + sea.mask).argmax(-1)
    assert moved.any() and (~moved).any()  # the test has power both ways
    assert torch.equal(z[~moved], z0[~moved])
    lifted = z0.scatter(-1, stats["ids"][..., None], z0.max(-1, keepdim=True).values + 1.0)
    assert torch.equal(z[moved], lifted[moved])
    assert torch.equal((z + sea.mask).argmax(-1), stats["ids"])


@pytest.mark.parametrize("decode_topk,use_reference", [("prefix", True), ("previous", True), ("previous", False)])
def test_reference_recipe_reads_and_decodes_on_the_response_space(tiny_policy, tiny_reward, decode_topk,
                                                                  use_reference):
    """With special tokens masked (here pi_ref's two favourites, so the mask matters), the released recipe's first
    iteration feeds argmax(Z + mask) to pi_ref and decodes on the response space: ``prefix`` inside pi_ref's top-k
    of the allowed tokens, ``previous`` inside the top-k mask of the allowed tokens (without the reference term,
    the plain argmax of Z + mask)."""
    from sea_minimal.lm import next_token_logits, topk_decode
    from sea_minimal.sampler import MASK_VALUE

    prompt = torch.tensor(PROMPT, device=DEVICE)
    cache = encode_prompt(tiny_policy.model, prompt)
    tiny_policy.__dict__["special_ids"] = cache.next_logits.argsort(descending=True)[:2].tolist()
    cfg = SEAConfig(recipe="reference", num_chains=8, length=4, steps=1, seed=0, init="random", use_noise=False,
                    topk=3, decode_topk=decode_topk, use_reference=use_reference)
    sea = SEA(tiny_policy, tiny_reward, cfg)
    res = sea.run([PROMPT], progress=False)[0]
    z0 = torch.randn(8, 4, V, generator=torch.Generator(device=DEVICE).manual_seed(0), device=DEVICE)
    mask = sea.mask
    inputs = (z0 + mask).argmax(-1)
    with torch.no_grad():
        logits = next_token_logits(tiny_policy.model, cache, one_hot(inputs, V))
        assert not torch.equal((z0 - mask).argmax(-1), inputs)  # the test has power: the mask matters here
        logp = F.log_softmax(logits, -1).gather(-1, inputs[..., None]).squeeze(-1).sum(-1)
        allowed = torch.zeros_like(logits, dtype=torch.bool).scatter_(-1, logits.topk(3, -1).indices, True)
        if decode_topk == "prefix":
            want = topk_decode(tiny_policy.model, cache, z0 + mask, 3, mask)
            loose = topk_decode(tiny_policy.model, cache, z0 + mask, 3)
        elif use_reference:
            want = (z0 + mask + torch.where(allowed, 0.0, MASK_VALUE) + mask).argmax(-1)
            loose = (z0 + mask + torch.where(allowed, 0.0, MASK_VALUE) - mask).argmax(-1)
        else:
            want = (z0 + mask).argmax(-1)
            loose = (z0 + mask + torch.where(allowed, 0.0, MASK_VALUE) + mask).argmax(-1)
    assert not torch.equal(loose, want)  # the test has power: the other reading decodes other tokens
    assert [c["token_ids"] for c in res.candidates] == want.tolist()
    assert np.allclose(res.trajectory["logp_ref"][0], logp.tolist(), atol=1e-5)


def test_dlp_kl_is_of_the_state_its_iteration_kept(tiny_policy, tiny_reward):
    """The MH recipe's trajectory describes the state after each accept / reject step, and so does its kl_init:
    a chain that moved at iteration 0 is already away from Z_0 there, one that never moved is not."""
    res = run(tiny_policy, tiny_reward, recipe="dlp", num_chains=6, length=5, steps=3, alpha=3.0, dlp_step=4.0,
              use_noise=False)
    kl = np.array(res.trajectory["kl_init"])  # [steps, chains]
    # dlp records each proposal's share of changed positions ("noise") and whether it was accepted
    moved_at_0 = (np.array(res.trajectory["noise"][0]) > 0) & (np.array(res.trajectory["accept"][0]) == 1)
    assert moved_at_0.any()
    assert (kl[0][moved_at_0] > 0).all() and np.allclose(kl[0][~moved_at_0], 0.0, atol=1e-6)
    final = np.array(res.kl_per_position).mean(-1)
    assert np.allclose(final, kl[-1], atol=1e-6)  # the per-position KL is of the last kept state
