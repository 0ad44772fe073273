"""The shared-prefix machinery (``msgrpo.lm.prefix``)."""

import torch

from msgrpo.lm.prefix import common_prefix_len


def test_common_prefix_by_hand():
    a = torch.arange(30)
    b = torch.cat([torch.arange(20), torch.tensor([99] * 10)])
    assert common_prefix_len([a, b]) == 20
    assert common_prefix_len([a, a.clone()]) == 29  # one token short of the shortest prompt
    assert common_prefix_len([a]) == 0  # a single prompt shares with nobody
    assert common_prefix_len([a, b], min_len=21) == 0  # too short to be worth a pass
    assert common_prefix_len([a[:10], a[:10]]) == 0
