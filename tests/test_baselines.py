"""Discrete baselines on a tiny random Llama (vocab 11) with a linear vocabulary reward."""

import pytest
import torch

from sea_minimal import SEAResult
from sea_minimal.baselines import args, best_of_n, cbs, decode, greedy, sampled
from sea_minimal.lm import encode_prompt
from sea_minimal.methods import METHODS, get_method
from sea_minimal.metrics import response_logprob
from sea_minimal.rewards import one_hot

PROMPT = [1, 4, 2, 7, 3]  # P = 5 prompt tokens
P = len(PROMPT)


def rescore(policy, reward, ids):
    scorer = reward.for_prompt(torch.tensor(PROMPT, device=policy.device))
    return float(scorer(one_hot(torch.tensor([ids], device=policy.device), policy.vocab_size))[0])


def test_registry_has_the_baselines():
    for name in ("greedy", "sampled", "best_of_n", "args", "cbs"):
        assert get_method(name) is METHODS[name]


def test_result_fields(tiny_policy, tiny_reward):
    res = best_of_n(tiny_policy, tiny_reward, PROMPT, seed=0, n=3, length=6)
    assert isinstance(res, SEAResult) and res.method == "best_of_n"
    assert len(res.candidates) == 3 and res.texts == [c["text"] for c in res.candidates]
    assert res.text == res.candidates[res.selected]["text"]
    assert res.config["n"] == 3 and res.config["length"] == 6 and res.seed == 0
    assert len(res.initial_texts) == 1 and len(res.initial_rewards) == 1
    assert res.initial_texts[0] == greedy(tiny_policy, tiny_reward, PROMPT, length=6).text
    assert {"forward_tokens", "backward_tokens", "reward_calls", "wall_time"} <= set(res.compute)
    assert "torch" in res.versions and res.wall_time > 0


def test_best_of_n_returns_the_max_reward_candidate(tiny_policy, tiny_reward):
    res = best_of_n(tiny_policy, tiny_reward, PROMPT, seed=3, n=8, length=5, batch_size=3)
    rewards = [rescore(tiny_policy, tiny_reward, c["token_ids"]) for c in res.candidates]
    assert rewards == pytest.approx([c["reward"] for c in res.candidates], abs=1e-5)
    assert len({tuple(c["token_ids"]) for c in res.candidates}) > 1  # really different samples
    assert res.candidates[res.selected]["reward"] == pytest.approx(max(rewards), abs=1e-6)
    for cand in res.candidates:  # each sample's own log pi_ref per token, as the runner's metrics compute it
        lp = response_logprob(tiny_policy, PROMPT, cand["token_ids"])["per_token"]
        assert cand["logp_ref_per_token"] == pytest.approx(lp, abs=1e-5)


def test_args_with_zero_weight_is_greedy(tiny_policy, tiny_reward):
    g = greedy(tiny_policy, tiny_reward, PROMPT, length=8)
    a = args(tiny_policy, tiny_reward, PROMPT, w=0.0, top_k=4, length=8)
    assert a.candidates[0]["token_ids"] == g.candidates[0]["token_ids"]
    assert a.candidates[0]["reward"] == pytest.approx(g.candidates[0]["reward"], abs=1e-6)
    # a large weight follows the reward instead: the linear reward prefers high token ids
    strong = args(tiny_policy, tiny_reward, PROMPT, w=100.0, top_k=4, length=8)
    assert strong.candidates[0]["reward"] > g.candidates[0]["reward"]


def test_cbs_with_one_chunk_is_best_of_k(tiny_policy, tiny_reward):
    c = cbs(tiny_policy, tiny_reward, PROMPT, seed=5, beam_width=1, successors=4, chunk_length=6, length=6)
    b = best_of_n(tiny_policy, tiny_reward, PROMPT, seed=5, n=4, length=6)
    assert c.candidates[0]["token_ids"] == b.candidates[b.selected]["token_ids"]
    assert c.candidates[0]["reward"] == pytest.approx(b.candidates[b.selected]["reward"])
    assert c.compute["forward_tokens"] == b.compute["forward_tokens"]


def test_cbs_several_chunks(tiny_policy, tiny_reward):
    res = cbs(tiny_policy, tiny_reward, PROMPT, seed=1, beam_width=2, successors=3, chunk_length=3, length=7)
    assert res.iterations == 3 and len(res.candidates) == 2
    for cand in res.candidates:
        assert len(cand["token_ids"]) == 7
        assert cand["reward"] == pytest.approx(rescore(tiny_policy, tiny_reward, cand["token_ids"]), abs=1e-5)
    assert len(res.trajectory["best_reward"]) == 3
    assert res.candidates[0]["reward"] >= res.candidates[1]["reward"]


def test_cbs_continuation_matches_a_fresh_prompt_cache(tiny_policy):
    """Continuing a sample from its kept KV cache gives the same logits as encoding prompt + sample anew."""
    model = tiny_policy.model
    cache = encode_prompt(model, torch.tensor(PROMPT))
    gen = torch.Generator().manual_seed(0)
    s = decode(model, cache, 2, 3, gen, keep_cache=True)
    fresh = encode_prompt(model, torch.tensor(PROMPT + s.ids(1)))
    cont = s.continue_from(1)
    assert cont.length == fresh.length
    torch.testing.assert_close(cont.next_logits, fresh.next_logits, atol=1e-4, rtol=1e-4)


def test_token_accounting_by_hand(tiny_policy, tiny_reward):
    T = 6
    g = greedy(tiny_policy, tiny_reward, PROMPT, length=T).compute
    assert (g["forward_tokens"], g["backward_tokens"], g["reward_calls"]) == (P + (T - 1), 0, 1)
    b = best_of_n(tiny_policy, tiny_reward, PROMPT, n=3, length=T, batch_size=2).compute
    assert (b["forward_tokens"], b["reward_calls"]) == (P + 3 * (T - 1), 3)  # the greedy "initial" is not counted
    a = args(tiny_policy, tiny_reward, PROMPT, top_k=4, length=T).compute
    assert (a["forward_tokens"], a["reward_calls"]) == (P + (T - 1), 4 * T)
    # CBS, 2 chunks of 3: round 1 runs all 3 sampled tokens (its cache continues), round 2 runs 2 of 3
    c = cbs(tiny_policy, tiny_reward, PROMPT, successors=2, chunk_length=3, length=T).compute
    assert (c["forward_tokens"], c["reward_calls"]) == (P + 2 * 3 + 2 * 2, 2 + 2)


@pytest.mark.parametrize("name,params", [("sampled", {}), ("best_of_n", {"n": 3}), ("args", {"top_k": 3}),
                                         ("cbs", {"chunk_length": 2, "beam_width": 2})])
def test_same_seed_same_output(tiny_policy, tiny_reward, name, params):
    fn = METHODS[name]
    one = fn(tiny_policy, tiny_reward, PROMPT, 7, length=5, **params)
    two = fn(tiny_policy, tiny_reward, PROMPT, 7, length=5, **params)
    assert [c["token_ids"] for c in one.candidates] == [c["token_ids"] for c in two.candidates]
    if name != "args":  # args is deterministic; the samplers depend on the seed
        other = fn(tiny_policy, tiny_reward, PROMPT, 8, length=5, **params)
        assert [c["token_ids"] for c in other.candidates] != [c["token_ids"] for c in one.candidates]


def test_stop_token_ends_the_response(tiny_policy, tiny_reward):
    full = greedy(tiny_policy, tiny_reward, PROMPT, length=8).candidates[0]["token_ids"]
    # a token that greedy emits later but not first: declare it special, generation must stop before it
    cut = next(i for i in range(1, len(full)) if full[i] not in full[:i])
    tiny_policy.__dict__["special_ids"] = [full[cut]]
    short = greedy(tiny_policy, tiny_reward, PROMPT, length=8)
    assert short.candidates[0]["token_ids"] == full[:cut]
    bon = best_of_n(tiny_policy, tiny_reward, PROMPT, n=6, length=8)
    for cand in bon.candidates:
        assert full[cut] not in cand["token_ids"] and len(cand["token_ids"]) >= 1
        assert cand["reward"] == pytest.approx(rescore(tiny_policy, tiny_reward, cand["token_ids"]), abs=1e-5)
        lp = response_logprob(tiny_policy, PROMPT, cand["token_ids"])["per_token"]  # stop token not counted
        assert cand["logp_ref_per_token"] == pytest.approx(lp, abs=1e-5)
    a = args(tiny_policy, tiny_reward, PROMPT, w=0.0, top_k=4, length=8)
    assert a.candidates[0]["token_ids"] == full[:cut]


def test_errors(tiny_policy, tiny_reward):
    with pytest.raises(ValueError, match="length"):
        greedy(tiny_policy, tiny_reward, PROMPT, length=0)
    with pytest.raises(ValueError, match="reward"):
        best_of_n(tiny_policy, None, PROMPT, n=2, length=3)


def test_cbs_with_several_chunks_is_not_best_of_k():
    """The book's CBS row (several chunks per answer) searches: a greedy chunk-wise choice on a reward that pays
    per token beats Best-of-k's single pick on average, and never equals it on every seed."""
    from conftest import tiny_lm
    from sea_minimal import Policy, VocabReward

    policy = Policy(tiny_lm(seed=3), tokenizer=None, name="tiny")
    reward = VocabReward(torch.linspace(-1.0, 1.0, 11), reduce="sum")
    same, gain, prompt = 0, 0.0, [3, 1, 4, 1, 5]  # a prompt after which this tiny model's samples vary
    for seed in range(8):
        c = cbs(policy, reward, prompt, seed=seed, beam_width=1, successors=4, chunk_length=2, length=8)
        b = best_of_n(policy, reward, prompt, seed=seed, n=4, length=8)
        assert c.iterations == 4
        same += c.candidates[0]["token_ids"] == b.candidates[b.selected]["token_ids"]
        gain += c.candidates[0]["reward"] - b.candidates[b.selected]["reward"]
    assert same < 8 and gain > 0


# --------------------------------------------------------------------------------------------- found by mutmut


def test_each_baseline_records_its_name_its_settings_and_the_initial_answer_on_request(tiny_policy, tiny_reward):
    """What a record is built from: the method's name, every setting (no fixed_length when it is off, the
    default), the candidates' sources, and the base policy's greedy answer only when ``initial`` asks for it."""
    g = greedy(tiny_policy, tiny_reward, PROMPT, length=5)
    assert (g.method, g.config, g.candidates[0]["source"]) == ("greedy", {"method": "greedy", "length": 5}, "greedy")
    runs = {
        "sampled": (sampled(tiny_policy, tiny_reward, PROMPT, seed=1, length=5, temperature=0.7, top_k=3,
                            initial=False, fixed_length=True),
                    {"length": 5, "temperature": 0.7, "top_k": 3, "fixed_length": True}, ["sample 0"]),
        "args": (args(tiny_policy, tiny_reward, PROMPT, w=0.5, top_k=2, length=5, initial=False, fixed_length=True),
                 {"w": 0.5, "top_k": 2, "length": 5, "fixed_length": True}, ["args"]),
        "cbs": (cbs(tiny_policy, tiny_reward, PROMPT, seed=2, beam_width=2, successors=2, chunk_length=2, length=5,
                    temperature=0.9, top_k=4, initial=False, fixed_length=True),
                {"beam_width": 2, "successors": 2, "chunk_length": 2, "length": 5, "temperature": 0.9, "top_k": 4,
                 "fixed_length": True}, ["beam 0", "beam 1"]),
    }
    for name, (res, config, sources) in runs.items():
        assert res.method == name and res.config == {"method": name, **config}, name
        assert res.initial_texts == [] and res.initial_rewards == [], name
        if sources is not None:
            assert [c["source"] for c in res.candidates] == sources, name
    steps = runs["args"][0]  # ARGS records the chosen token's log-prob, reward and score at every step
    assert set(steps.trajectory) == {"logp", "reward", "score"} and steps.iterations == 5
    assert all(len(v) == steps.iterations for v in steps.trajectory.values())
    for method in (sampled, args, cbs):
        res = method(tiny_policy, tiny_reward, PROMPT, length=5)
        assert res.initial_texts == [g.text] and res.initial_rewards == pytest.approx([g.candidates[0]["reward"]])
        assert "fixed_length" not in res.config


def test_baseline_defaults_are_the_documented_ones():
    """The paper's 50 tokens; sampled: temperature 1, top-k 50; CBS: the authors' 32-token chunks, 1 beam, 4 successors; ARGS top-k 50."""
    import inspect

    def defaults(f):
        return {k: p.default for k, p in inspect.signature(f).parameters.items() if p.default is not p.empty}

    assert defaults(sampled) == {"seed": 0, "length": 50, "temperature": 1.0, "top_k": 50, "initial": True,
                                 "fixed_length": False}
    assert defaults(cbs) == {"seed": 0, "beam_width": 1, "successors": 4, "chunk_length": 32, "length": 50,
                             "temperature": 1.0, "top_k": 50, "initial": True, "fixed_length": False}
    assert defaults(args) == {"seed": 0, "w": 1.0, "top_k": 50, "length": 50, "initial": True, "fixed_length": False}


def test_a_call_without_settings_runs_with_the_documented_defaults(tiny_policy, tiny_reward):
    """What the defaults do, not only what the signature says (mutmut's trampolines keep the signature)."""
    expected = {
        sampled: {"length": 50, "temperature": 1.0, "top_k": 50},
        args: {"w": 1.0, "top_k": 50, "length": 50},
        cbs: {"beam_width": 1, "successors": 4, "chunk_length": 32, "length": 50, "temperature": 1.0, "top_k": 50},
        best_of_n: {"n": 16, "temperature": 1.0, "top_k": 50, "length": 50, "batch_size": 16},
    }
    for method, config in expected.items():
        res = method(tiny_policy, tiny_reward, PROMPT)
        assert res.seed == 0 and res.config == {"method": method.__name__, **config}, method.__name__
        assert len(res.initial_texts) == 1, method.__name__  # initial=True by default
        assert max(len(c["token_ids"]) for c in res.candidates) <= 50
    assert len(best_of_n(tiny_policy, tiny_reward, PROMPT).candidates) == 16


def test_top_k_one_is_greedy_for_every_sampling_baseline(tiny_policy, tiny_reward):
    """top_k reaches the decoder: with k = 1 a sample, every CBS successor and ARGS are the greedy answer."""
    g = greedy(tiny_policy, tiny_reward, PROMPT, length=6).candidates[0]["token_ids"]
    assert sampled(tiny_policy, tiny_reward, PROMPT, seed=5, length=6, top_k=1).candidates[0]["token_ids"] == g
    assert sampled(tiny_policy, tiny_reward, PROMPT, seed=5, length=6, temperature=5.0).candidates[0]["token_ids"] != g
    beams = cbs(tiny_policy, tiny_reward, PROMPT, seed=5, successors=3, chunk_length=3, length=6, top_k=1)
    assert beams.candidates[0]["token_ids"] == g
    assert args(tiny_policy, tiny_reward, PROMPT, w=5.0, top_k=1, length=6).candidates[0]["token_ids"] == g


def test_baseline_settings_below_one_are_refused_and_one_is_accepted(tiny_policy, tiny_reward):
    with pytest.raises(ValueError, match="^top_k must be >= 1, got 0$"):
        args(tiny_policy, tiny_reward, PROMPT, top_k=0, length=3)
    args(tiny_policy, tiny_reward, PROMPT, top_k=1, length=3)
    for bad in ("beam_width", "successors", "chunk_length"):
        with pytest.raises(ValueError, match="^beam_width, successors and chunk_length must be >= 1$"):
            cbs(tiny_policy, tiny_reward, PROMPT, length=3, **{bad: 0})
    cbs(tiny_policy, tiny_reward, PROMPT, length=3, beam_width=1, successors=1, chunk_length=1)


def test_sampled_is_best_of_one_and_every_sampler_stops_or_bans_as_asked(tiny_policy, tiny_reward):
    """One sample is Best-of-1 with the same seed (one row drawn, not two); at the stop token a sample and every
    CBS beam end; on SEA's response space (fixed_length) no special token appears and every answer has `length`."""
    for seed in range(4):
        one = sampled(tiny_policy, tiny_reward, PROMPT, seed=seed, length=6, initial=False)
        bon = best_of_n(tiny_policy, tiny_reward, PROMPT, seed=seed, n=1, length=6, initial=False)
        assert one.candidates[0]["token_ids"] == bon.candidates[0]["token_ids"]
        assert one.compute["forward_tokens"] == bon.compute["forward_tokens"]
    cache = encode_prompt(tiny_policy.model, torch.tensor(PROMPT, device=tiny_policy.device))
    stop = int(cache.next_logits.argsort(descending=True)[1])  # pi_ref's second choice: sampled often, not first
    tiny_policy.__dict__["special_ids"] = [stop]
    runs = [sampled(tiny_policy, tiny_reward, PROMPT, seed=s, length=12, temperature=2.0) for s in range(12)]
    runs += [cbs(tiny_policy, tiny_reward, PROMPT, seed=s, length=12, chunk_length=3, temperature=2.0)
             for s in range(6)]
    answers = [c["token_ids"] for r in runs for c in r.candidates]
    assert all(stop not in ids for ids in answers)
    assert any(len(ids) < 12 for ids in answers)  # the test has power: some answers ended at the stop token
    fixed = [sampled(tiny_policy, tiny_reward, PROMPT, seed=s, length=12, temperature=2.0, fixed_length=True)
             for s in range(12)]
    fixed += [cbs(tiny_policy, tiny_reward, PROMPT, seed=s, length=12, chunk_length=3, temperature=2.0,
                  fixed_length=True) for s in range(6)]
    assert all(len(c["token_ids"]) == 12 and stop not in c["token_ids"] for r in fixed for c in r.candidates)


def test_cbs_expands_every_open_beam_and_never_opens_with_the_stop_token(tiny_policy, tiny_reward):
    """A finished beam ranked first does not stop the round: the open beams behind it are still extended, so
    `beam_width` beams come back. Only a beam's first token is kept from being the stop token (no empty answers):
    a beam can stop where a later chunk starts."""
    cache = encode_prompt(tiny_policy.model, torch.tensor(PROMPT, device=tiny_policy.device))
    ranked = cache.next_logits.argsort(descending=True).tolist()
    tiny_policy.__dict__["special_ids"] = [ranked[1]]
    widths = [len(cbs(tiny_policy, tiny_reward, PROMPT, seed=s, beam_width=3, successors=2, chunk_length=2,
                      length=10, temperature=2.0).candidates) for s in range(10)]
    assert widths == [3] * 10
    # one-token chunks: a beam may stop at the start of any later chunk, only its very first token is banned
    lengths = [len(c["token_ids"]) for s in range(10) for c in
               cbs(tiny_policy, tiny_reward, PROMPT, seed=s, beam_width=2, successors=2, chunk_length=1, length=8,
                   temperature=2.0).candidates]
    assert min(lengths) >= 1 and min(lengths) < 8


def test_best_of_n_passes_top_k_and_initial_on_and_refuses_n_or_batch_size_below_one(tiny_policy, tiny_reward):
    """top_k reaches Best-of-N's decoder (k = 1: every sample is the greedy answer; the default k = 50 over 11 tokens
    is no filter), initial=False leaves the base policy's answer out of the record, and n or batch_size below 1 is
    refused with the method's own message."""
    g = greedy(tiny_policy, tiny_reward, PROMPT, length=6)
    one = best_of_n(tiny_policy, tiny_reward, PROMPT, seed=5, n=4, length=6, top_k=1, batch_size=3, initial=False)
    assert [c["token_ids"] for c in one.candidates] == [g.candidates[0]["token_ids"]] * 4
    assert one.initial_texts == [] and one.initial_rewards == []
    free = best_of_n(tiny_policy, tiny_reward, PROMPT, seed=5, n=4, length=6, temperature=5.0)
    assert any(c["token_ids"] != g.candidates[0]["token_ids"] for c in free.candidates)  # the test has power
    assert free.initial_texts == [g.text]
    for bad in ({"n": 0}, {"batch_size": 0}):
        with pytest.raises(ValueError, match="^n and batch_size must be >= 1, got n="):
            best_of_n(tiny_policy, tiny_reward, PROMPT, length=3, **bad)
