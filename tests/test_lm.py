"""The differentiable pieces: straight-through tokens, KV-cached log pi_ref, energy gradients, Langevin."""

import math

import pytest
import torch
import torch.nn.functional as F

from conftest import DEVICE, tiny_lm
from sea_minimal import langevin_step
from sea_minimal.lm import decode, encode_prompt, next_token_logits, sample_tokens, sequence_logprob, straight_through

PROMPT = torch.tensor([3, 1, 4, 1, 5], device=DEVICE)


def full_forward_logprob(model, prompt_ids, tokens):
    """log pi(y|x) from ONE forward over [prompt embeddings, soft response embeddings], no cache."""
    E = model.get_input_embeddings().weight
    embeds = torch.cat([E[prompt_ids], tokens[0] @ E], dim=0)[None]
    logits = model(inputs_embeds=embeds).logits.float()[0]
    P = prompt_ids.numel()
    scoring = logits[P - 1 : P - 1 + tokens.shape[1]]
    return (tokens[0] * F.log_softmax(scoring, -1)).sum()


def test_straight_through_forward_is_one_hot_argmax():
    z = torch.randn(3, 5, 7)
    y = straight_through(z, tau=0.7)
    assert torch.equal(y, F.one_hot(z.argmax(-1), 7).float())


def test_straight_through_backward_is_softmax_jacobian():
    tau = 0.7
    z = torch.randn(2, 3, 7, requires_grad=True)
    g = torch.randn(2, 3, 7)
    (straight_through(z, tau) * g).sum().backward()
    p = torch.softmax(z.detach() / tau, -1)
    jac_t_g = (p * g - p * (p * g).sum(-1, keepdim=True)) / tau  # (diag p - p p^T) g / tau
    torch.testing.assert_close(z.grad, jac_t_g, rtol=1e-5, atol=1e-6)


def test_kv_cached_logprob_equals_full_forward():
    model = tiny_lm()
    cache = encode_prompt(model, PROMPT)
    for tokens in (F.one_hot(torch.tensor([[2, 7, 0, 9]], device=DEVICE), 11).float(),
                   torch.softmax(torch.randn(1, 4, 11, device=DEVICE), -1)):
        cached = sequence_logprob(next_token_logits(model, cache, tokens), tokens)[0]
        full = full_forward_logprob(model, PROMPT, tokens)
        torch.testing.assert_close(cached, full, rtol=1e-4, atol=1e-4)


def test_hard_ids_score_exactly_like_their_one_hot_rows():
    model = tiny_lm()
    cache = encode_prompt(model, PROMPT)
    ids = torch.tensor([[2, 7, 0, 9], [5, 5, 1, 3]], device=DEVICE)
    onehot = F.one_hot(ids, 11).float()
    torch.testing.assert_close(next_token_logits(model, cache, ids), next_token_logits(model, cache, onehot))
    mask = torch.zeros(11, device=DEVICE)
    mask[4] = -1e10
    by_ids = sequence_logprob(next_token_logits(model, cache, ids), ids, mask)
    by_onehot = sequence_logprob(next_token_logits(model, cache, onehot), onehot, mask)
    assert by_ids.shape == (2,)
    torch.testing.assert_close(by_ids, by_onehot)


def test_prompt_cache_is_not_mutated_by_reuse():
    model = tiny_lm()
    cache = encode_prompt(model, PROMPT)
    before = [k.clone() for k, _ in cache.layers]
    tokens = torch.softmax(torch.randn(3, 4, 11, device=DEVICE), -1)
    first = next_token_logits(model, cache, tokens)
    second = next_token_logits(model, cache, tokens)
    torch.testing.assert_close(first, second)
    assert all(torch.equal(b, k) for b, (k, _) in zip(before, cache.layers))


def test_sampled_logits_are_teacher_forced_logits():
    model = tiny_lm()
    cache = encode_prompt(model, PROMPT)
    gen = torch.Generator(device=DEVICE).manual_seed(0)
    samples = decode(model, cache, 3, 6, gen, temperature=1.0, return_logits=True)
    assert samples.tokens.shape == (3, 6) and samples.logits.shape == (3, 6, 11) and not samples.stopped.any()
    forced = next_token_logits(model, cache, F.one_hot(samples.tokens, 11).float())
    torch.testing.assert_close(samples.logits, forced, rtol=1e-4, atol=1e-4)


def test_energy_gradient_matches_finite_differences():
    """d/dy of U(y) = -(log pi_ref(y|x) + alpha r(y)) on soft tokens, against central differences.

    The model runs in float64 and the inputs are drawn on the CPU, so the check is the same instance on any device.
    """
    model = tiny_lm(dtype=torch.float64)
    cache = encode_prompt(model, PROMPT)
    w = torch.linspace(-1, 1, 11, device=DEVICE)
    alpha = 2.0

    def energy(y):
        return -(sequence_logprob(next_token_logits(model, cache, y), y) + alpha * (y @ w).sum(-1)).sum()

    gen = torch.Generator().manual_seed(1)
    y = torch.softmax(torch.randn(1, 4, 11, generator=gen), -1).to(DEVICE).requires_grad_(True)
    (grad,) = torch.autograd.grad(energy(y), y)
    for _ in range(3):
        direction = torch.randn(y.shape, generator=gen).to(DEVICE)
        eps = 1e-4  # the tiny model is strongly curved: larger steps measure curvature, not the gradient
        with torch.no_grad():
            fd = (energy(y + eps * direction) - energy(y - eps * direction)) / (2 * eps)
        analytic = (grad * direction).sum()
        assert math.isclose(fd.item(), analytic.item(), rel_tol=1e-2, abs_tol=1e-2), (fd.item(), analytic.item())


def test_langevin_reaches_gaussian_moments():
    """Unadjusted Langevin on U = (z - mu)^2 / (2 s^2): samples must have mean mu and variance ~ s^2."""
    mu, s, eta = 1.5, 0.8, 0.01
    gen = torch.Generator().manual_seed(0)
    z = torch.zeros(20000)
    for _ in range(1500):
        z = langevin_step(z, (z - mu) / s**2, eta, 1.0, gen)
    # ULA's stationary variance for this Gaussian is s^2 / (1 - eta / (2 s^2)): a 0.8% bias here.
    assert abs(z.mean().item() - mu) < 0.03
    assert abs(z.var().item() / s**2 - 1) < 0.04


def test_langevin_noise_scale_zero_is_gradient_descent():
    gen = torch.Generator().manual_seed(0)
    z, grad = torch.randn(5), torch.randn(5)
    torch.testing.assert_close(langevin_step(z, grad, 0.1, 0.0, gen), z - 0.1 * grad)


def test_continuing_a_sample_without_its_cache_says_how_to_keep_it():
    import pytest

    model = tiny_lm()
    samples = decode(model, encode_prompt(model, torch.tensor([1, 2, 3], device=DEVICE)), 2, 3, None,
                     temperature=0.0)
    with pytest.raises(RuntimeError, match=r"^decode\(\.\.\., keep_cache=True\) is needed to continue a sample\.$"):
        samples.continue_from(0)


def test_straight_through_and_relax_default_to_temperature_one():
    """Without tau, the backward pass is the Jacobian of softmax(z) itself (tau = 1), by hand."""
    from sea_minimal.lm import relax, straight_through

    torch.manual_seed(0)
    z = torch.randn(2, 3, 5, dtype=torch.float64, requires_grad=True)
    w = torch.randn(5, dtype=torch.float64)
    p = torch.softmax(z.detach(), -1)
    want = p * (w - (p * w).sum(-1, keepdim=True))
    for f in (straight_through, lambda x: relax(x)[0], lambda x: relax(x)[1]):
        (grad,) = torch.autograd.grad((f(z) * w).sum(), z)
        assert torch.allclose(grad, want)
    hard = straight_through(z)
    assert hard.dtype == z.dtype and torch.equal(hard, torch.nn.functional.one_hot(z.argmax(-1), 5).double())


def test_sample_tokens_is_decode_padded_to_the_full_length():
    """sample_tokens passes every setting to decode and pads: 0 tokens and 0 logits after decoding ended, stopped
    True from a row's stop token on (its own position included)."""
    model = tiny_lm()
    cache = encode_prompt(model, torch.tensor([3, 1, 4, 1, 5], device=DEVICE))

    def ends_every_row(v):
        s = decode(model, cache, 3, 10, torch.Generator(device=DEVICE).manual_seed(4), 0.5, 3, [v])
        return s.tokens.shape[1] < 10

    stop = next(v for v in range(11) if ends_every_row(v))  # so that the padding is exercised
    settings = [dict(temperature=0.5, top_k=3, stop_ids=[stop]), dict(temperature=1.5, banned_ids=[stop, 2]),
                dict(temperature=3.0, top_k=2)]
    for kw in settings:
        tokens, logits, stopped = sample_tokens(model, cache, 3, 10, torch.Generator(device=DEVICE).manual_seed(4),
                                                **kw)
        s = decode(model, cache, 3, 10, torch.Generator(device=DEVICE).manual_seed(4), return_logits=True, **kw)
        run = s.tokens.shape[1]
        assert tokens.shape == (3, 10) and logits.shape == (3, 10, 11) and stopped.shape == (3, 10)
        positions = torch.arange(10, device=DEVICE)[None]
        assert torch.equal(stopped, positions >= s.lengths[:, None])
        assert torch.equal(tokens[:, :run], s.tokens.masked_fill(stopped[:, :run], 0))
        assert (tokens[stopped] == 0).all() and torch.equal(logits[:, :run], s.logits)
        assert (logits[:, run:] == 0).all()
        if "stop_ids" in kw:
            assert run < 10 and stopped.any(-1).all()
        elif "banned_ids" in kw:
            assert not stopped.any() and not torch.isin(tokens, torch.tensor([stop, 2], device=DEVICE)).any()


def test_sample_tokens_samples_at_temperature_one_by_default():
    """pi_ref's own samples (SEA's initial state, Best-of-N) are drawn at temperature 1 unless told otherwise."""
    model = tiny_lm()
    cache = encode_prompt(model, torch.tensor([3, 1, 4, 1, 5], device=DEVICE))
    default = sample_tokens(model, cache, 8, 6, torch.Generator(device=DEVICE).manual_seed(7))[0]
    at_one = sample_tokens(model, cache, 8, 6, torch.Generator(device=DEVICE).manual_seed(7), temperature=1.0)[0]
    hotter = sample_tokens(model, cache, 8, 6, torch.Generator(device=DEVICE).manual_seed(7), temperature=2.0)[0]
    assert torch.equal(default, at_one) and not torch.equal(default, hotter)


def tiny_gemma3(vocab_size: int = 32, hidden_size: int = 16):
    """A tiny Gemma 3 (its embedding layer scales looked-up rows by sqrt(H), which ``inputs_embeds`` bypasses)."""
    from transformers import Gemma3ForCausalLM, Gemma3TextConfig

    torch.manual_seed(0)
    config = Gemma3TextConfig(vocab_size=vocab_size, hidden_size=hidden_size, intermediate_size=32, num_hidden_layers=2,
                              num_attention_heads=2, num_key_value_heads=1, head_dim=8, max_position_embeddings=64,
                              sliding_window=16)
    return Gemma3ForCausalLM(config).eval().requires_grad_(False)


@pytest.mark.parametrize("hidden_size", [16, 4])  # scales 4 and 2
def test_response_tokens_reach_a_gemma_model_as_their_token_ids_would(hidden_size):
    """The embedding scale is the model's, not SmolLM2's 1: a scoring path that skips it scores another model."""
    from sea_minimal.lm import embed_scale
    from sea_minimal.reward_model import _backbone, encode_prompt_states, response_hidden

    model = tiny_gemma3(hidden_size=hidden_size)
    assert embed_scale(model) == pytest.approx(hidden_size ** 0.5)
    prompt, tokens = torch.tensor([2, 5, 7, 1]), torch.tensor([[3, 9, 4, 11, 6]])
    full = model(input_ids=torch.cat([prompt, tokens[0]])[None]).logits.float()[0, prompt.numel() - 1 : -1]
    cache = encode_prompt(model, prompt)
    torch.testing.assert_close(next_token_logits(model, cache, tokens)[0], full, rtol=1e-4, atol=1e-4)
    torch.testing.assert_close(next_token_logits(model, cache, F.one_hot(tokens, 32).float())[0], full,
                               rtol=1e-4, atol=1e-4)
    states = _backbone(model)(input_ids=torch.cat([prompt, tokens[0]])[None]).last_hidden_state[0, prompt.numel():]
    E = model.get_input_embeddings().weight
    got = response_hidden(model, encode_prompt_states(model, prompt), E[tokens], torch.tensor([5]))[0]
    torch.testing.assert_close(got, states, rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("attributes, scale", [
    ({"scalar_embed_scale": 3.0}, 3.0),  # transformers 5: a plain float beside the buffer
    ({"scalar_embed_scale": 3.0, "embed_scale": torch.tensor(5.0)}, 3.0),  # the float is read first (no GPU sync)
    ({"embed_scale": torch.tensor(2.5)}, 2.5),  # older transformers: the buffer only
    ({}, 1.0),  # Llama, SmolLM2: no scale
])
def test_embed_scale_reads_the_layers_float_then_its_buffer(attributes, scale):
    from types import SimpleNamespace

    from sea_minimal.lm import embed_scale

    layer = SimpleNamespace(**attributes)
    assert embed_scale(SimpleNamespace(get_input_embeddings=lambda: layer)) == scale
