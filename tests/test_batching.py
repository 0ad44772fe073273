"""Samples, padding layout and token-budget packing."""

import torch

from msgrpo.batching import collate, minibatches, pack_by_budget, step_samples
from msgrpo.types import Episode, Step, StepSample


def _sample(p, c, adv=1.0):
    return StepSample(torch.arange(1, p + 1), torch.arange(100, 100 + c), -torch.ones(c), adv)


def test_collate_layout_by_hand():
    mb = collate([_sample(2, 3, 1.0), _sample(3, 1, -1.0)], pad_id=0)
    assert mb.input_ids.tolist() == [[0, 1, 2, 100, 101, 102], [1, 2, 3, 100, 0, 0]]
    assert mb.attention_mask.tolist() == [[0, 1, 1, 1, 1, 1], [1, 1, 1, 1, 0, 0]]
    assert mb.completion_mask.tolist() == [[1, 1, 1], [1, 0, 0]]
    assert mb.old_logprobs.tolist() == [[-1, -1, -1], [-1, 0, 0]]
    assert mb.advantages.tolist() == [1.0, -1.0]
    assert mb.ref_logprobs is None


def test_pack_by_budget_respects_budget_and_keeps_everything():
    samples = [_sample(p, c) for p, c in [(10, 2), (3, 1), (10, 2), (4, 1), (20, 5), (3, 2)]]
    groups = pack_by_budget(samples, token_budget=30)
    assert sorted(id(s) for g in groups for s in g) == sorted(id(s) for s in samples)
    for g in groups:
        width = max(s.prompt_ids.numel() for s in g) + max(s.completion_ids.numel() for s in g)
        assert len(g) * width <= 30 or len(g) == 1
    # length bucketing: the short prompts are packed together
    assert {s.prompt_ids.numel() for s in groups[0]} <= {3, 4}


def test_pack_by_budget_keeps_each_prefix_group_in_micro_batches_of_its_own():
    # two games of a mixture whose prompt lengths interleave: sorted by length alone they would share
    # micro-batches (and so no rules prefix); each micro-batch holds one game's samples
    lengths = [(5, 1, 0), (6, 1, 1), (7, 1, 0), (8, 1, 1), (9, 1, 0), (9, 1, 1), (5, 2, 1)]
    samples = []
    for p, c, game in lengths:
        s = _sample(p, c)
        s.prefix_group = game
        samples.append(s)
    groups = pack_by_budget(samples, token_budget=40)
    assert sorted(id(s) for g in groups for s in g) == sorted(id(s) for s in samples)
    assert all(len({s.prefix_group for s in g}) == 1 for g in groups)
    # by hand: game 0 is (5, 1), (7, 1), (9, 1): 3 rows x (9 + 1) = 30 <= 40, one micro-batch; game 1
    # sorted is (5, 2), (6, 1), (8, 1), (9, 1): 3 x (8 + 2) = 30 fits, the 4th makes 4 x (9 + 2) = 44 > 40
    assert [[s.prompt_ids.numel() for s in g] for g in groups] == [[5, 7, 9], [5, 6, 8], [9]]
    # one group: the length-bucketed packing of before, 4 x (7 + 2) = 36, then 3 x (9 + 1) = 30
    for s in samples:
        s.prefix_group = 0
    assert [len(g) for g in pack_by_budget(samples, token_budget=40)] == [4, 3]


def test_step_samples_follow_chosen_episodes_with_repeats():
    def ep(n, g):
        e = Episode(group_id=g, seed=0)
        for t in range(n):
            e.steps.append(
                Step(
                    "o",
                    torch.tensor([1]),
                    torch.tensor([2, 3]),
                    torch.tensor([-0.1, -0.2]),
                    "x",
                    0,
                    True,
                    float(t),
                )
            )
        return e

    episodes = [ep(2, 0), ep(3, 0)]
    adv = [torch.tensor([0.5, 0.5]), torch.tensor([-1.0, -1.0, -1.0])]
    samples = step_samples(episodes, adv, torch.tensor([1, 1, 0]))
    assert [s.advantage for s in samples] == [-1.0] * 6 + [0.5, 0.5]
    assert torch.equal(samples[0].completion_ids, torch.tensor([2, 3]))
    episodes[1].game = 1  # a second game of a mixture: its steps form their own prefix group
    assert [s.prefix_group for s in step_samples(episodes, adv, torch.tensor([1, 0]))] == [1, 1, 1, 0, 0]


def test_minibatches_count_tokens_and_sequences():
    samples = [_sample(4, c) for c in (1, 2, 3, 4)]
    out = minibatches(samples, 2, token_budget=1000, pad_id=0, generator=torch.Generator().manual_seed(0))
    assert len(out) == 2
    assert sum(m.num_tokens for m in out) == 10 and [m.num_sequences for m in out] == [2, 2]
    assert sum(int(mb.completion_mask.sum()) for m in out for mb in m.micro_batches) == 10


def test_collate_gives_identical_sequences_one_row():
    a, b = _sample(2, 1, 1.0), _sample(3, 1, -1.0)
    a_again = StepSample(a.prompt_ids.clone(), a.completion_ids.clone(), torch.tensor([-2.0]), 0.5)
    mb = collate([a, b, a_again], pad_id=0)
    assert mb.input_ids.tolist() == [[0, 1, 2, 100], [1, 2, 3, 100]]  # U = 2 distinct rows
    assert mb.rows.tolist() == [0, 1, 0]
    # per-sample tensors keep one row per sample (B = 3)
    assert mb.advantages.tolist() == [1.0, -1.0, 0.5]
    assert mb.old_logprobs.tolist() == [[-1.0], [-1.0], [-2.0]]
    assert mb.per_sample(torch.tensor([[10.0], [20.0]])).tolist() == [[10.0], [20.0], [10.0]]
    plain = collate([a, b, a_again], pad_id=0, dedupe=False)
    assert plain.rows is None and plain.input_ids.shape[0] == 3
    assert collate([a, b], pad_id=0).rows is None  # nothing repeated: one row per sample


def test_pack_by_budget_counts_a_repeated_sequence_once():
    same = [_sample(8, 2, adv) for adv in (1.0, -1.0, 0.5, 2.0)]  # 10 tokens each, identical ids
    groups = pack_by_budget(same, token_budget=10)
    assert [len(g) for g in groups] == [4]  # one distinct row of 10 tokens fits the budget
    assert [len(g) for g in pack_by_budget(same, token_budget=10, dedupe=False)] == [1, 1, 1, 1]


def test_minibatches_split_evenly_into_exactly_the_number_asked():
    for n, k, sizes in ((10, 4, [3, 3, 2, 2]), (5, 3, [2, 2, 1]), (8, 8, [1] * 8), (7, 1, [7])):
        out = minibatches([_sample(3, 1) for _ in range(n)], k, 10_000, 0, torch.Generator().manual_seed(0))
        assert [b.num_sequences for b in out] == sizes
