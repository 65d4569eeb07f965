"""The shard loader: exact tokens in file order, determinism for a seed, exact continuation from a state."""
import numpy as np
import pytest
from hypothesis import given, settings, strategies as st

from minigpt.pretrain.dataloader import DataLoader
from minigpt.fileio import write_shard


def make_shards(tmp_path, sizes, seed=0):
    rng = np.random.default_rng(seed)
    tokens = [rng.integers(0, 65536, n).astype(np.uint16) for n in sizes]
    paths = []
    for i, t in enumerate(tokens):
        paths.append(str(tmp_path / f"train_{i:06d}.bin"))
        write_shard(paths[-1], t)
    return paths, tokens


def test_yields_exactly_the_shards_tokens(tmp_path):
    sizes = [23, 1, 17, 40]  # a 1-token shard holds no window; the others do not divide evenly
    T, B = 5, 3
    paths, tokens = make_shards(tmp_path, sizes)
    loader = DataLoader(paths, B, T)
    n = loader.num_windows()
    assert n == sum((s - 1) // T for s in sizes)
    windows = [loader.next_window().copy() for _ in range(n)]
    # stitched back together (each window's last token starts the next), every shard's prefix is exact
    i = 0
    for t in tokens:
        k = (len(t) - 1) // T
        if k == 0:
            continue
        stitched = np.concatenate([w[:-1] for w in windows[i:i + k]] + [windows[i + k - 1][-1:]])
        np.testing.assert_array_equal(stitched, t[:k * T + 1])
        i += k
    # the next epoch starts over at the first shard
    np.testing.assert_array_equal(loader.next_window(), tokens[0][:T + 1])
    # batches: targets are inputs shifted by one
    loader.reset()
    x, y = loader.next_batch()
    assert x.shape == y.shape == (B, T) and x.dtype == np.int64
    np.testing.assert_array_equal(x[:, 1:], y[:, :-1])
    np.testing.assert_array_equal(x[0], tokens[0][:T])


@settings(max_examples=25)
@given(sizes=st.lists(st.integers(1, 60), min_size=1, max_size=4), T=st.integers(1, 8), B=st.integers(1, 4),
       seed=st.integers(0, 2**31), before=st.integers(0, 30), sampling=st.sampled_from(["epoch", "random"]))
def test_seeded_order_is_deterministic_and_resumes_exactly(tmp_path_factory, sizes, T, B, seed, before, sampling):
    sizes[0] = max(sizes[0], T + 1)  # at least one window somewhere
    paths, tokens = make_shards(tmp_path_factory.mktemp("s"), sizes, seed=seed % 1000)
    a, b = DataLoader(paths, B, T, seed=seed, sampling=sampling), DataLoader(paths, B, T, seed=seed, sampling=sampling)
    for _ in range(before):
        np.testing.assert_array_equal(a.next_batch()[0], b.next_batch()[0])
    c = DataLoader(paths, B, T, seed=seed, sampling=sampling)
    c.load_state(a.state())
    for _ in range(5):
        xa, ya = a.next_batch()
        xc, yc = c.next_batch()
        np.testing.assert_array_equal(xa, xc)
        np.testing.assert_array_equal(ya, yc)
        for row in np.concatenate([xa, ya[:, -1:]], axis=1):  # every window is a real slice of a shard
            assert any((t[i:i + T + 1] == row).all() for t in tokens for i in range(len(t) - T))


def test_seeded_epoch_visits_each_window_once(tmp_path):
    T = 4
    sizes = [3 * T + 1, 5 * T + 1]
    paths, tokens = make_shards(tmp_path, sizes)
    loader = DataLoader(paths, 1, T, seed=7)
    epochs = {}
    while loader.epoch < 3:
        e = loader.epoch
        w = loader.next_window()
        if loader.epoch != e:  # this window opened the next epoch
            e = loader.epoch
        epochs.setdefault(e, []).append(tuple(w.tolist()))
    for e in (0, 1, 2):
        windows = epochs[e]
        assert len(windows) == len(set(windows))  # never twice in an epoch
        # one grid per shard at an offset in [0, T): (n-1)//T or one fewer windows
        assert sum((n - 1) // T - 1 for n in sizes) <= len(windows) <= sum((n - 1) // T for n in sizes)
        for w in windows:  # each a real slice of a shard
            assert any(tuple(t[i:i + T + 1].tolist()) == w for t in tokens for i in range(len(t) - T))
    assert epochs[0] != epochs[1] or epochs[1] != epochs[2]  # epochs are cut and ordered differently


def test_random_sampling_covers_every_offset(tmp_path):
    T = 3
    paths, tokens = make_shards(tmp_path, [10, 2, 7])  # starts: 7 + 0 + 4
    loader = DataLoader(paths, 50, T, seed=0, sampling="random")
    seen = set()
    for _ in range(10):
        x, y = loader.next_batch()
        seen.update(tuple(r) for r in np.concatenate([x, y[:, -1:]], axis=1).tolist())
    expected = {tuple(t[i:i + T + 1].tolist()) for t in tokens for i in range(len(t) - T)}
    assert seen == expected
    with pytest.raises(ValueError, match="needs a seed"):
        DataLoader(paths, 2, T, sampling="random")


def test_too_short_shards_are_an_error(tmp_path):
    paths, _ = make_shards(tmp_path, [3, 4])
    with pytest.raises(ValueError, match="shorter than one window"):
        DataLoader(paths, 2, 8)
    with pytest.raises(FileNotFoundError, match="no token shards"):
        DataLoader(str(tmp_path / "nothing_*.bin"), 2, 8)
