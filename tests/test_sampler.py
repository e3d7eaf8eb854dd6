"""Property tests of the mixture sampler: proportions, determinism, resume, ranks, bad weights."""

from __future__ import annotations

import json

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from mixagent.data import DataDir
from mixagent.data.sampler import MixtureSampler, validate_weights
from mixagent.errors import DataError

SEQ = 32


@pytest.fixture(scope="module")
def data(synthetic_datadir):
    return DataDir(synthetic_datadir)


weights_st = st.lists(st.floats(0.0, 1.0), min_size=4, max_size=4).filter(lambda w: sum(w) > 1e-3)


@settings(max_examples=40, deadline=None)
@given(w=weights_st, n=st.integers(1, 3000))
def test_proportions_are_exact_for_every_prefix(data, w, n):
    """After n picks every domain has n*w_d picks to within 1/2 + K_active*w_d/2 (Webster bound)."""
    s = MixtureSampler(data, SEQ, w, seed=0)
    doms, _ = s.next_indices(n)
    p = validate_weights(w, 4)
    counts = np.zeros((n, 4))
    counts[np.arange(n), doms] = 1
    prefix = counts.cumsum(0)
    ideal = np.arange(1, n + 1)[:, None] * p[None, :]
    k_active = int((p > 0).sum())
    bound = 0.5 + k_active * p / 2 + 1e-9
    assert np.all(np.abs(prefix - ideal) <= bound[None, :])
    assert np.all(prefix[:, p == 0] == 0), "a zero-weight domain was drawn"


def test_proportions_converge(data):
    w = [0.55, 0.25, 0.15, 0.05]
    s = MixtureSampler(data, SEQ, w, seed=3)
    doms, _ = s.next_indices(20_000)
    np.testing.assert_allclose(np.bincount(doms, minlength=4) / 20_000, w, atol=2e-4)


@settings(max_examples=25, deadline=None)
@given(splits=st.lists(st.integers(1, 200), min_size=1, max_size=8), seed=st.integers(0, 2**31))
def test_stream_does_not_depend_on_request_sizes(data, splits, seed):
    w = [0.4, 0.3, 0.2, 0.1]
    a = MixtureSampler(data, SEQ, w, seed=seed)
    b = MixtureSampler(data, SEQ, w, seed=seed)
    da, ca = a.next_indices(sum(splits))
    parts = [b.next_indices(k) for k in splits]
    np.testing.assert_array_equal(da, np.concatenate([p[0] for p in parts]))
    np.testing.assert_array_equal(ca, np.concatenate([p[1] for p in parts]))


def test_same_seed_same_stream_different_seed_different_order(data):
    a = MixtureSampler(data, SEQ, seed=11).next_batch(64)[0]
    b = MixtureSampler(data, SEQ, seed=11).next_batch(64)[0]
    c = MixtureSampler(data, SEQ, seed=12).next_batch(64)[0]
    np.testing.assert_array_equal(a, b)
    assert not np.array_equal(a, c)


@pytest.mark.parametrize("n", [50, 400])  # row slices (few per domain) and grouped gathers (many)
def test_batches_are_real_shard_slices(data, n):
    s = MixtureSampler(data, SEQ, seed=0)
    doms, chunks = s.next_indices(n)
    toks = s.read(doms, chunks)
    for d, c, row in zip(doms, chunks, toks, strict=True):
        shard = data.tokens(s.domains[d], "train")
        np.testing.assert_array_equal(row, shard[c * SEQ : (c + 1) * SEQ])


def test_no_chunk_repeats_within_an_epoch(data):
    s = MixtureSampler(data, SEQ, [1, 0, 0, 0], seed=5)
    n = int(s.num_chunks[0])
    _, chunks = s.next_indices(n)
    assert sorted(chunks.tolist()) == list(range(n))
    _, again = s.next_indices(n)  # second epoch: a fresh permutation of the same chunks
    assert sorted(again.tolist()) == list(range(n))
    assert not np.array_equal(chunks, again)


@settings(max_examples=25, deadline=None)
@given(
    cut=st.integers(0, 400),
    changes=st.lists(st.tuples(st.integers(0, 500), weights_st), max_size=4),
    seed=st.integers(0, 1000),
)
def test_resume_yields_identical_continuation(data, cut, changes, seed):
    """A sampler restored from JSON state continues exactly, across scheduled weight changes."""

    def run(restore_at: int | None) -> np.ndarray:
        s = MixtureSampler(data, SEQ, [0.25] * 4, seed=seed)
        out, pos = [], 0
        plan = sorted(changes, key=lambda c: c[0])
        for at, w in plan:
            if at > pos:
                out.append(s.next_flat_indices(at - pos))
                pos = at
            s.set_weights(w)
        # schedule a change ahead of the position, as the CPT callback does
        s.set_weights([0.1, 0.2, 0.3, 0.4], start=pos + 150)
        if restore_at is not None:
            out.append(s.next_flat_indices(restore_at))
            state = json.loads(json.dumps(s.state_dict()))
            s = MixtureSampler(data, SEQ, seed=seed)
            s.load_state_dict(state)
            out.append(s.next_flat_indices(300 - restore_at))
        else:
            out.append(s.next_flat_indices(300))
        return np.concatenate(out)

    np.testing.assert_array_equal(run(None), run(min(cut, 300)))


@pytest.mark.parametrize("world", [2, 3])
def test_ranks_draw_disjoint_streams_that_tile_the_global_stream(data, world):
    w = [0.4, 0.3, 0.2, 0.1]
    single = MixtureSampler(data, SEQ, w, seed=2).next_flat_indices(90 * world)
    ranks = [MixtureSampler(data, SEQ, w, seed=2, rank=r, world_size=world).next_flat_indices(90) for r in range(world)]
    for r in range(world):
        np.testing.assert_array_equal(ranks[r], single[r::world])
    allr = np.concatenate(ranks)
    # within one epoch of every domain no sample is drawn twice across ranks
    assert len(np.unique(allr)) == len(allr)


def test_state_is_rank_independent(data):
    a = MixtureSampler(data, SEQ, seed=1, rank=0, world_size=2)
    b = MixtureSampler(data, SEQ, seed=1, rank=1, world_size=2)
    a.next_indices(10)
    b.next_indices(10)
    assert a.state_dict() == b.state_dict()


def test_scheduled_weights_take_effect_at_the_index(data):
    s = MixtureSampler(data, SEQ, [1, 0, 0, 0], seed=0)
    s.set_weights([0, 0, 0, 1], start=40)
    doms, _ = s.next_indices(60)
    assert set(doms[:40].tolist()) == {0}
    assert set(doms[40:].tolist()) == {3}
    with pytest.raises(DataError, match="already at sample 60"):
        s.set_weights([1, 1, 1, 1], start=10)


def test_domain_subset(data):
    names = data.domain_names
    s = MixtureSampler(data, SEQ, [0.5, 0.5], domains=[names[2], names[0]], seed=0)
    doms, _ = s.next_indices(10)
    assert set(doms.tolist()) == {0, 1}
    assert s.domains == [names[2], names[0]]


@pytest.mark.parametrize(
    ("weights", "message"),
    [
        ([float("nan"), 1, 1, 1], "NaN at positions"),
        ([float("inf"), 1, 1, 1], "inf at positions"),
        ([-0.1, 0.5, 0.3, 0.3], "non-negative"),
        ([0.5, 0.5], r"expected \(4,\)"),
        ([[0.25] * 4], r"expected \(4,\)"),
        ([0, 0, 0, 0], "all zero"),
        (["a", 1, 1, 1], "4 real numbers"),
        (["0.25"] * 4, "not strings"),  # numeric text is not silently parsed
        ([0.25 + 1j, 0.25, 0.25, 0.25], "complex"),  # nor is an imaginary part dropped
        (np.array([True, True, False, True]), "4 real numbers"),
    ],
)
def test_bad_weights_are_clear_errors(data, weights, message):
    with pytest.raises(DataError, match=message):
        MixtureSampler(data, SEQ, weights)
    s = MixtureSampler(data, SEQ)
    before = s.state_dict()
    with pytest.raises(DataError, match=message):
        s.set_weights(weights)
    assert s.state_dict() == before, "a rejected weight change must not alter the sampler"


def test_unnormalised_weights_are_rescaled(data):
    s = MixtureSampler(data, SEQ, [3, 1, 0, 0])
    np.testing.assert_allclose(s.weights, [0.75, 0.25, 0, 0])


def test_huge_finite_weights_do_not_overflow_to_zero():
    """``[1e308] * 4`` sums to inf; the check must rescale instead of returning zeros."""
    np.testing.assert_allclose(validate_weights([1e308, 1e308, 0, 1e308], 4), [1 / 3, 1 / 3, 0, 1 / 3])
    w = [0.2, 0.3, 0.1, 0.4]  # normal inputs keep exactly the old arithmetic (w / sum)
    assert validate_weights(w, 4).tolist() == (np.asarray(w) / np.sum(w)).tolist()


def test_domain_shorter_than_a_sequence_is_a_clear_error(data):
    too_long = int(max(d.train_tokens for d in data.domains)) + 1
    with pytest.raises(DataError, match="fewer than one sequence"):
        MixtureSampler(data, too_long)


def test_state_from_another_configuration_is_refused(data):
    state = MixtureSampler(data, SEQ, seed=1).state_dict()
    with pytest.raises(DataError, match="seed"):
        MixtureSampler(data, SEQ, seed=2).load_state_dict(state)
    with pytest.raises(DataError, match="seq_len"):
        MixtureSampler(data, SEQ * 2, seed=1).load_state_dict(state)
    with pytest.raises(DataError, match="not a mixagent sampler state"):
        MixtureSampler(data, SEQ, seed=1).load_state_dict({"position": 3})


@settings(max_examples=30, deadline=None)
@given(
    block=st.sampled_from([1, 3, 7, 64]),
    ops=st.lists(
        st.one_of(
            st.tuples(st.just("draw"), st.integers(1, 50)),
            st.tuples(st.just("set"), st.integers(0, 80), weights_st),
            st.tuples(st.just("save"), st.just(0)),
        ),
        max_size=12,
    ),
)
def test_stream_does_not_depend_on_plan_ahead_block(data, block, ops):
    """Planning ahead in blocks is an optimisation only: any block size gives the same stream,
    including weight changes that land inside an already planned block, and mid-block saves."""

    def run(plan_ahead: int) -> tuple[list[np.ndarray], list[dict]]:
        s = MixtureSampler(data, SEQ, [0.25] * 4, seed=4)
        s.plan_ahead = plan_ahead
        out, states = [], []
        for op in ops:
            if op[0] == "draw":
                out.append(s.next_flat_indices(op[1]))
            elif op[0] == "set":
                s.set_weights(op[2], start=s.position + op[1])
            else:
                states.append(s.state_dict())
        out.append(s.next_flat_indices(100))
        states.append(s.state_dict())
        return out, states

    a, sa = run(1024)
    b, sb = run(block)
    for x, y in zip(a, b, strict=True):
        np.testing.assert_array_equal(x, y)
    assert sa == sb
