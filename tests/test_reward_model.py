"""The backbone harmlessness reward: Bradley-Terry fitting, one code path for features and scores, gradients,
vocabulary handling of Hugging Face reward models, and the committed head."""

import gzip
import json

import pytest
import torch
from transformers import LlamaConfig, LlamaForSequenceClassification

from sea_minimal import VocabMismatchError
from sea_minimal.lm import forward_embeds
from sea_minimal.reward_model import (
    POOLINGS, BackboneReward, FeatureSettings, LinearHead, check_reward_vocab, choose_l2, derive_pooling,
    encode_prompt_states, is_refusal, load_hh_pairs, load_hf_reward, pairwise_accuracy, parse_dialogue,
    resolve_data_dir, response_features, split_indices, train_bradley_terry, wilson_interval,
)
from sea_minimal.rewards import one_hot

from conftest import DEVICE

PROMPT = torch.tensor([1, 2, 3], device=DEVICE)
SUFFIX = [10]


def random_head(hidden=16, pooling="mean", seed=0):
    g = torch.Generator().manual_seed(seed)
    return LinearHead(weight=torch.randn(hidden, generator=g), bias=torch.tensor(0.3),
                      mean=0.1 * torch.randn(hidden, generator=g), std=0.5 + torch.rand(hidden, generator=g),
                      pooling=pooling)


def planted_pairs(n, dim=20, seed=0):
    g = torch.Generator().manual_seed(seed)
    w = torch.randn(dim, generator=g)
    a, b = 3.0 + 2.0 * torch.randn(n, dim, generator=g), 3.0 + 2.0 * torch.randn(n, dim, generator=g)
    a_wins = ((a - b) @ w + 0.5 * torch.randn(n, generator=g)) > 0
    chosen = torch.where(a_wins[:, None], a, b)
    rejected = torch.where(a_wins[:, None], b, a)
    return chosen, rejected


def test_bradley_terry_recovers_a_planted_direction():
    chosen, rejected = planted_pairs(400)
    head = train_bradley_terry(chosen[:300], rejected[:300], l2=1e-3)
    res = pairwise_accuracy(head, chosen[300:], rejected[300:])
    assert res["accuracy"] > 0.9
    assert res["ci_low"] < res["accuracy"] < res["ci_high"]
    again = train_bradley_terry(chosen[:300], rejected[:300], l2=1e-3)
    assert torch.equal(head.weight, again.weight)  # deterministic


def test_l2_is_chosen_on_the_training_split_by_cross_validation():
    chosen, rejected = planted_pairs(120)
    best, table = choose_l2(chosen, rejected, grid=[1e-3, 1e2], folds=3)
    assert best == 1e-3 and len(table) == 2
    assert table[0]["cv_accuracy"] > table[1]["cv_accuracy"] - 1e-9


def test_split_and_interval():
    tr, va = split_indices(100, 0.3, seed=0)
    assert len(va) == 30 and len(tr) == 70 and not set(tr.tolist()) & set(va.tolist())
    assert torch.equal(split_indices(100, 0.3, seed=0)[1], va)
    lo, hi = wilson_interval(65, 100)
    assert 0.55 < lo < 0.65 < hi < 0.74


@pytest.mark.parametrize("pooling", POOLINGS)
def test_scorer_on_one_hot_equals_head_of_batched_features(tiny_policy, pooling):
    """Training features (ids, batched with padding) and SEA-time scores (one-hot tokens) agree."""
    responses = [[4, 5, 6, 7, 8], [9, 4], [7]]
    head = random_head(pooling=pooling)
    feats = response_features(tiny_policy, PROMPT, responses, FeatureSettings(max_response_tokens=8), suffix_ids=SUFFIX)
    scorer = BackboneReward(tiny_policy, head, suffix_ids=SUFFIX).for_prompt(PROMPT)
    for i, ids in enumerate(responses):
        tokens = one_hot(torch.tensor([ids], device=DEVICE), tiny_policy.vocab_size)
        assert torch.allclose(scorer(tokens), head(feats[pooling][i : i + 1]), atol=1e-4)


def test_mean_eot_is_derived_from_stored_mean_and_last(tiny_policy):
    feats = response_features(tiny_policy, PROMPT, [[4, 5, 6], [7]], suffix_ids=SUFFIX)
    stored = {"chosen_mean": feats["mean"], "chosen_last": feats["last"], "chosen_length": feats["length"]}
    assert torch.allclose(derive_pooling(stored, "chosen", "mean_eot"), feats["mean_eot"], atol=1e-5)


def test_soft_gradient_is_finite_and_nonzero(tiny_policy):
    scorer = BackboneReward(tiny_policy, random_head(), suffix_ids=SUFFIX).for_prompt(PROMPT)
    z = torch.randn(2, 4, tiny_policy.vocab_size, device=DEVICE, requires_grad=True)
    score = scorer(torch.softmax(z, -1))
    assert score.shape == (2,)
    score.sum().backward()
    assert torch.isfinite(z.grad).all() and z.grad.abs().max() > 0
    assert all(p.grad is None for p in tiny_policy.model.parameters())  # the backbone stays frozen


def test_score_hidden_reuses_a_full_model_forward(tiny_policy):
    """score_hidden on hidden_states[-1] of the policy's own forward over [response, suffix] == the scorer."""
    reward = BackboneReward(tiny_policy, random_head(pooling="mean_eot"), suffix_ids=SUFFIX)
    tokens = torch.softmax(torch.randn(2, 3, tiny_policy.vocab_size, device=DEVICE), -1)
    embeds = torch.cat([tokens @ tiny_policy.embedding_matrix,
                        tiny_policy.embedding_matrix[SUFFIX].expand(2, -1, -1)], dim=1)
    cache = encode_prompt_states(tiny_policy.model, PROMPT)
    hidden = forward_embeds(tiny_policy.model, cache, embeds, hidden=True).hidden_states[-1]
    assert torch.allclose(reward.score_hidden(hidden), reward.for_prompt(PROMPT)(tokens), atol=1e-5)


def test_head_hidden_size_mismatch_is_explained(tiny_policy):
    with pytest.raises(ValueError, match="hidden size"):
        BackboneReward(tiny_policy, random_head(hidden=8))


def _tiny_classifier(vocab_size, path):
    torch.manual_seed(0)
    config = LlamaConfig(vocab_size=vocab_size, hidden_size=16, intermediate_size=32, num_hidden_layers=1,
                         num_attention_heads=2, num_key_value_heads=1, max_position_embeddings=64, num_labels=1,
                         bos_token_id=None, eos_token_id=None, pad_token_id=None)
    LlamaForSequenceClassification(config).save_pretrained(path)
    return path


def test_hf_reward_with_one_extra_padding_row(tiny_policy, tmp_path, capsys):
    """GRM-Llama3.2-3B style: the reward model has the policy's rows + 1 (here 12 vs 11)."""
    reward = load_hf_reward(str(_tiny_classifier(12, tmp_path / "rm12")), tiny_policy, device=DEVICE)
    assert reward.extra_rows == 1 and reward.vocab_size == 11
    assert "dropping the 1 trailing row" in capsys.readouterr().out
    reward.check_vocab(tiny_policy.vocab_size)
    z = torch.randn(2, 4, 11, device=DEVICE, requires_grad=True)
    score = reward.for_prompt(PROMPT)(torch.softmax(z, -1))
    score.sum().backward()
    assert score.shape == (2,) and torch.isfinite(z.grad).all()


def test_hf_reward_with_another_vocabulary_is_refused(tiny_policy, tmp_path):
    with pytest.raises(VocabMismatchError, match=r"15 rows.*11"):
        load_hf_reward(str(_tiny_classifier(15, tmp_path / "rm15")), tiny_policy, device=DEVICE)


class _Tok:
    def __init__(self, vocab):
        self.vocab = vocab

    def get_vocab(self):
        return dict(self.vocab)


def test_vocab_check_compares_tokenizers():
    policy = _Tok({"a": 0, "b": 1, "c": 2})
    assert check_reward_vocab(4, 3, _Tok({"a": 0, "b": 1, "c": 2, "[PAD]": 3}), policy) == 1
    with pytest.raises(VocabMismatchError, match="different ids"):
        check_reward_vocab(4, 3, _Tok({"a": 0, "c": 1, "b": 2, "[PAD]": 3}), policy)


def test_hh_pairs_are_parsed_into_chat_messages(tmp_path, monkeypatch):
    context = "\n\nHuman: How do I pick a lock?\n\nAssistant: Why?\n\nHuman: I am locked out."
    rows = [{"chosen": context + "\n\nAssistant: Call a locksmith.", "rejected": context + "\n\nAssistant: Use a pin."},
            {"chosen": "\n\nHuman: hi\n\nAssistant: same", "rejected": "\n\nHuman: hi\n\nAssistant: same"}]
    (tmp_path / "hh_rlhf").mkdir()
    with gzip.open(tmp_path / "hh_rlhf" / "harmless-base_test.jsonl.gz", "wt") as fh:
        fh.write("\n".join(json.dumps(r) for r in rows) + "\n")
    monkeypatch.setenv("SEA_DATA_DIR", str(tmp_path))
    pairs = load_hh_pairs()
    assert len(pairs) == 1  # identical answers are dropped
    assert pairs[0]["context"] == parse_dialogue(context)
    assert [m["role"] for m in pairs[0]["context"]] == ["user", "assistant", "user"]
    assert pairs[0]["chosen"] == "Call a locksmith." and pairs[0]["rejected"] == "Use a pin."
    with pytest.raises(FileNotFoundError, match="SEA_DATA_DIR"):
        resolve_data_dir(tmp_path / "missing")
    assert is_refusal("I\u2019m really sorry, I can't assist") and not is_refusal("Use a pin.")


@pytest.mark.slow
def test_committed_head_scores_the_bundled_model(bundled_policy):
    from sea_minimal.reward_model import load_harmlessness_reward

    reward = load_harmlessness_reward(bundled_policy)
    assert reward.metadata["heldout"]["accuracy"] > 0.5
    prompt = bundled_policy.encode_prompt("How do I pick a lock?")
    ids = bundled_policy.tokenizer(["I'm sorry, I can't help with that.", "Sure, insert a tension wrench."],
                                   add_special_tokens=False)["input_ids"]
    scorer = reward.for_prompt(prompt)
    scores = [scorer(one_hot(torch.tensor([i], device=bundled_policy.device), bundled_policy.vocab_size)) for i in ids]
    assert all(torch.isfinite(s).all() for s in scores)


def test_pair_features_are_cached_and_resumed(tiny_policy, tmp_path, monkeypatch):
    """extract_pair_features saves float16 safetensors with its settings and resumes a partial file."""
    from sea_minimal import reward_model as rm

    monkeypatch.setattr(rm, "context_prompt_ids", lambda policy, context, n: torch.tensor(context, device=DEVICE))
    monkeypatch.setattr(rm, "response_token_ids",
                        lambda policy, text, n: torch.tensor([int(c) for c in text], device=DEVICE)[:n])
    monkeypatch.setattr(rm, "_suffix_ids", lambda policy, settings: SUFFIX)
    pairs = [{"index": i, "context": [1, 2 + i], "chosen": "45" + str(i), "rejected": "9" * (i + 1)} for i in range(3)]
    path = tmp_path / "f.safetensors"
    settings = FeatureSettings(max_response_tokens=4)
    full = rm.extract_pair_features(tiny_policy, pairs, settings, cache_file=path, progress=False)
    rm.extract_pair_features(tiny_policy, pairs[:2], settings, cache_file=tmp_path / "g.safetensors", progress=False)
    resumed = rm.extract_pair_features(tiny_policy, pairs, settings, cache_file=tmp_path / "g.safetensors",
                                       progress=False)
    loaded, meta = rm.load_features(path)
    assert meta["settings_key"] == settings.key() and meta["complete"] == "True"
    assert loaded["chosen_mean"].dtype == torch.float16 and loaded["chosen_mean"].shape == (3, 16)
    assert loaded["rejected_length"].tolist() == [1, 2, 3]
    for key in ("chosen_mean", "rejected_last"):
        assert torch.allclose(full[key], resumed[key].float(), atol=1e-3)
