"""ConfigError and require: one message format for a bad setting, built in one place."""

import pytest

from msgrpo.components.games import FrozenLake
from msgrpo.components.samplers import Uniform
from msgrpo.data import RolloutDataModule
from msgrpo.errors import ConfigError, require


def test_require_names_the_setting_the_requirement_and_the_value():
    require(True, "size", ">= 2", 1)  # nothing raised
    with pytest.raises(ConfigError) as info:
        require(False, "size", ">= 2", 1)
    err = info.value
    assert str(err) == err.message == err.detail == "size must be >= 2, got 1"
    assert (err.setting, err.owner) == ("size", None)


def test_a_component_check_leads_with_its_class_name_once():
    with pytest.raises(ConfigError) as info:
        Uniform(num_episodes=0)
    err = info.value
    assert str(err) == "Uniform: num_episodes must be an integer >= 1, got 0"
    assert (err.owner, err.setting) == ("Uniform", "num_episodes")
    assert err.detail == "num_episodes must be an integer >= 1, got 0"  # what the CLI leads with the config key


def test_a_sampler_checked_by_the_data_module_names_the_sampler():
    with pytest.raises(ConfigError) as info:
        RolloutDataModule(FrozenLake(), sampler=Uniform(100), num_groups=2, group_size=8)
    err = info.value
    assert str(err) == (
        "Uniform: num_episodes=100 exceeds the 16 episodes generated per iteration (num_groups x group_size); "
        "lower num_episodes or set replacement=true"
    )
    assert (err.owner, err.setting) == ("Uniform", "num_episodes")
