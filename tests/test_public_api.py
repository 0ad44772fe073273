"""Every name in ``msgrpo.__all__`` resolves to the object in its module."""

import importlib

import pytest

import msgrpo


@pytest.mark.parametrize("name", msgrpo.__all__)
def test_public_names_resolve(name):
    obj = getattr(msgrpo, name)
    assert obj is getattr(importlib.import_module(msgrpo._LOCATIONS[name]), name)


def test_unknown_name():
    with pytest.raises(AttributeError, match="no attribute 'Nope'"):
        msgrpo.Nope  # noqa: B018
