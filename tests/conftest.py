"""Shared fixtures: a tiny random causal LM (built in the test, no download) and the bundled SmolLM2."""

import importlib.util
import os
import sys
from pathlib import Path

import pytest
import torch
from transformers import LlamaConfig, LlamaForCausalLM

from sea_minimal import Policy, VocabReward

# Run the device-independent tests on a GPU with SEA_TEST_DEVICE=cuda (CI has none: default cpu).
DEVICE = os.environ.get("SEA_TEST_DEVICE", "cpu")
IN_CI = os.environ.get("CI", "").lower() == "true"
SCRIPTS = Path(__file__).resolve().parent.parent / "scripts"


def load_script(name: str):
    """``scripts/<name>.py`` imported as a module (the scripts are not part of the package)."""
    spec = importlib.util.spec_from_file_location(name, SCRIPTS / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses in the script look their module up there
    spec.loader.exec_module(module)
    return module


def missing_prerequisite(message: str) -> None:
    """A test cannot run because something it needs is missing (Chromium, a wheel, the data folder).

    Outside CI it is skipped with ``message``; with CI=true it fails with it, so that a CI run never passes by
    silently skipping the tests that check what the README promises."""
    if IN_CI:
        pytest.fail(f"CI=true and a prerequisite is missing: {message}", pytrace=False)
    pytest.skip(message)


def tiny_lm(vocab_size: int = 11, seed: int = 0, dtype=torch.float32) -> LlamaForCausalLM:
    torch.manual_seed(seed)
    config = LlamaConfig(vocab_size=vocab_size, hidden_size=16, intermediate_size=32, num_hidden_layers=2,
                         num_attention_heads=2, num_key_value_heads=1, max_position_embeddings=64,
                         initializer_range=0.5, bos_token_id=None, eos_token_id=None, pad_token_id=None)
    return LlamaForCausalLM(config).to(dtype=dtype, device=DEVICE).eval()


def tiny_backbone_reward(policy):
    """A reward head on the tiny policy's own backbone (a random linear head, end-of-turn id 10 as its suffix)."""
    from sea_minimal.reward_model import BackboneReward, LinearHead

    H = policy.model.config.hidden_size
    gen = torch.Generator().manual_seed(0)
    head = LinearHead(weight=torch.randn(H, generator=gen), bias=torch.tensor(0.0), mean=torch.zeros(H),
                      std=torch.ones(H), pooling="mean")
    return BackboneReward(policy.model, head, suffix_ids=[10])


@pytest.fixture
def one_thread():
    """Tiny models run fastest on one thread (and far faster on a CPU shared with other jobs)."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture
def tiny_policy():
    return Policy(tiny_lm(), tokenizer=None, name="tiny")


@pytest.fixture
def tiny_reward():
    weights = torch.linspace(-1.0, 1.0, 11, device=DEVICE)
    return VocabReward(weights, reduce="sum")


@pytest.fixture(scope="session")
def bundled_policy():
    from sea_minimal import load_policy

    return load_policy(device=DEVICE)


def tiny_text_tokenizer():
    """A real Hugging Face fast tokenizer for the tiny models, built in memory: the words "a" .. "i" are ids 0-8,
    "<s>" (9, a BOS it adds unless add_special_tokens=False, as Llama tokenizers do) and "<unk>" (10) are special."""
    from tokenizers import Tokenizer, models, pre_tokenizers, processors
    from transformers import PreTrainedTokenizerFast

    vocab = {**{w: i for i, w in enumerate("abcdefghi")}, "<s>": 9, "<unk>": 10}
    tok = Tokenizer(models.WordLevel(vocab=vocab, unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    tok.post_processor = processors.TemplateProcessing(single="<s> $A", special_tokens=[("<s>", 9)])
    return PreTrainedTokenizerFast(tokenizer_object=tok, bos_token="<s>", unk_token="<unk>")
