"""SEAConfig on its own: every invalid field is named with its fix, the edges that are valid stay valid, the
presets set what their docstrings say, and the released recipe's noise schedule is read as released."""

import pytest

from sea_minimal import SEAConfig
from sea_minimal.config import RECIPES, REFERENCE_NOISE_SCHEDULE

BAD = [
    (dict(recipe="adam"), f"recipe='adam' (choose one of {RECIPES})"),
    (dict(init="zeros"), "init='zeros' (choose 'policy' or 'random')"),
    (dict(select="first"), "select='first' (choose 'last' or 'best')"),
    (dict(num_chains=0), "num_chains=0 (must be a positive integer)"),
    (dict(length=2.0), "length=2.0 (must be a positive integer)"),
    (dict(steps=-1), "steps=-1 (must be a positive integer)"),
    *[(dict(**{name: 0.0}), f"{name}=0.0 (must be > 0)")
      for name in ("step_size", "lr", "st_tau", "reward_temp", "init_temp", "init_sample_temp", "dlp_step")],
    (dict(decode_topk="next"), "decode_topk='next' (choose 'prefix' or 'previous')"),
    (dict(rewrite_prompt="none"), "rewrite_prompt='none' (choose 'no-question' or 'with-question')"),
    (dict(rewrite_tokens=-1), "rewrite_tokens=-1 (must be 0, for the response length, or more)"),
    (dict(rewrite_tokens=1.5), "rewrite_tokens=1.5 (must be 0, for the response length, or more)"),
    (dict(dlp_block=-2), "dlp_block=-2 (must be 0, for all positions, or a positive integer)"),
    (dict(dlp_block=0.5), "dlp_block=0.5 (must be 0, for all positions, or a positive integer)"),
    (dict(noise_scale=-0.1), "noise_scale=-0.1 (must be >= 0)"),
]


@pytest.mark.parametrize("bad, message", BAD, ids=[next(iter(b)) + "=" + repr(b[next(iter(b))]) for b, _ in BAD])
def test_each_invalid_field_is_named_with_its_fix(bad, message):
    with pytest.raises(ValueError) as err:
        SEAConfig(**bad)
    assert str(err.value) == "Invalid SEAConfig: " + message


def test_all_problems_are_reported_at_once():
    with pytest.raises(ValueError) as err:
        SEAConfig(recipe="adam", length=0, lr=-1.0)
    assert str(err.value) == (f"Invalid SEAConfig: recipe='adam' (choose one of {RECIPES}); "
                              "length=0 (must be a positive integer); lr=-1.0 (must be > 0)")


def test_the_edges_that_are_valid_stay_valid():
    SEAConfig(num_chains=1, length=1, steps=1, rewrite_tokens=0, dlp_block=0, noise_scale=0.0, step_size=1e-12)
    for recipe in RECIPES:
        SEAConfig(recipe=recipe, init="random", select="best", decode_topk="previous",
                  rewrite_prompt="with-question")


def test_presets_set_their_recipe_and_keep_overrides():
    assert SEAConfig.paper().recipe == "langevin"
    released = SEAConfig.released_code()
    assert (released.recipe, released.select, released.rewrite) == ("reference", "best", True)
    assert SEAConfig.released_code(rewrite=False).rewrite is False
    assert SEAConfig.exact_mcmc().recipe == "dlp"
    assert SEAConfig.paper(steps=7).steps == 7
    assert SEAConfig().replace(alpha=3.0).alpha == 3.0
    assert SEAConfig(alpha=2.0).to_dict()["alpha"] == 2.0


def test_noise_schedule_is_read_as_released():
    """(until, std): iterations before ``until`` use ``std``; past the last entry its std stays."""
    cfg = SEAConfig(recipe="reference", noise_schedule=((2, 0.5), (4, 0.1)))
    assert [cfg.noise_std(i) for i in range(6)] == [0.5, 0.5, 0.1, 0.1, 0.1, 0.1]
    assert SEAConfig(recipe="reference", noise_schedule=()).noise_std(3) == 0.0
    assert SEAConfig(recipe="reference", use_noise=False).noise_std(0) == 0.0
    default = SEAConfig(recipe="reference")
    assert default.noise_schedule == REFERENCE_NOISE_SCHEDULE
    assert [default.noise_std(i) for i in (0, 49, 50, 199, 500)] == [0.1, 0.1, 0.05, 0.001, 0.001]
