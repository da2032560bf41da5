import numpy as np

from selfsup.subsets import split_indices


def labels():
    rng = np.random.default_rng(0)
    return rng.permutation(np.repeat(np.arange(10), [500, 400, 300, 300, 300, 300, 300, 300, 300, 200]))


def test_validation_is_disjoint_from_labelled_and_fixed_across_fractions():
    y = labels()
    vals = []
    for fraction in (1.0, 0.5, 0.1):
        val, lab = split_indices(y, 0, 0.1, fraction)
        assert not set(val) & set(lab)
        vals.append(val)
    assert all(np.array_equal(vals[0], v) for v in vals)


def test_fractions_are_nested():
    y = labels()
    _, full = split_indices(y, 0, 0.1, 1.0)
    _, half = split_indices(y, 0, 0.1, 0.5)
    _, tenth = split_indices(y, 0, 0.1, 0.1)
    assert set(tenth) < set(half) < set(full)
    assert len(full) + len(split_indices(y, 0, 0.1, 1.0)[0]) == len(y)


def test_every_split_is_stratified():
    y = labels()
    counts = np.bincount(y)
    val, lab = split_indices(y, 0, 0.1, 0.1)
    assert np.array_equal(np.bincount(y[val]), np.round(counts * 0.1).astype(int))
    pool = counts - np.bincount(y[val])
    assert np.array_equal(np.bincount(y[lab]), np.round(pool * 0.1).astype(int))


def test_same_seed_same_split_other_seed_other_split():
    y = labels()
    a = split_indices(y, 3, 0.1, 0.5)
    b = split_indices(y, 3, 0.1, 0.5)
    c = split_indices(y, 4, 0.1, 0.5)
    assert all(np.array_equal(x, z) for x, z in zip(a, b))
    assert not np.array_equal(a[1], c[1])


def test_each_seed_is_its_own_replicate_nested_within_and_different_across_seeds():
    # a replicate (seed) draws its own validation set and labelled subset; within it 10 % < 50 % < 100 %
    y = labels()
    draws = {seed: {f: split_indices(y, seed, 0.1, f) for f in (1.0, 0.5, 0.1)} for seed in (0, 1, 2)}
    for by_fraction in draws.values():
        assert set(by_fraction[0.1][1]) < set(by_fraction[0.5][1]) < set(by_fraction[1.0][1])
        assert all(np.array_equal(by_fraction[1.0][0], by_fraction[f][0]) for f in (0.5, 0.1))
    for a, b in ((0, 1), (0, 2), (1, 2)):
        for f in (0.5, 0.1):
            overlap = len(set(draws[a][f][1]) & set(draws[b][f][1])) / len(draws[a][f][1])
            assert overlap < f + 0.1  # about what two independent draws of share f share, not the same pool
        assert not np.array_equal(draws[a][1.0][0], draws[b][1.0][0])


def test_pretrainings_validation_set_is_the_splits_at_every_fraction():
    from selfsup.subsets import split_indices, validation_indices

    labels = np.arange(500) % 10
    for fraction in (0.01, 0.1, 0.5, 1.0):
        assert np.array_equal(validation_indices(labels, 3, 0.1), split_indices(labels, 3, 0.1, fraction)[0])


def test_a_choice_on_validation_reads_no_more_labels_of_a_class_than_the_run_trains_on():
    from selfsup.subsets import capped_per_class, split_indices
    labels = np.repeat(np.arange(10), 500)
    val, lab = split_indices(labels, 3, 0.1, 0.01)  # 50 validation and 4 or 5 labelled images a class
    caps = dict(zip(*(x.tolist() for x in np.unique(labels[lab], return_counts=True))))
    pos = capped_per_class(labels[val], caps)
    assert np.array_equal(np.bincount(labels[val][pos], minlength=10), np.bincount(labels[lab], minlength=10))
    assert len(pos) == len(lab) < len(val) and np.all(np.diff(pos) > 0)
    big = capped_per_class(labels[val], {c: 10_000 for c in range(10)})  # more labelled than validation: all of it
    assert np.array_equal(big, np.arange(len(val)))
