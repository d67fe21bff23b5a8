"""The tie rule and what "exact" means: one value per pair, ties to the lower index, for
every dtype, precision, tile and selector (issue 26)."""

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

import gpugraph as gg
from gpugraph.kernels import topk_cpu as _select_cpu
from gpugraph.knn import tiles as _tiles


def reference_cosine(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """The documented canonical similarity, written out in NumPy: every product a_t b_t
    in float64 rounded to the nearest multiple of 2^-61 (ties to even) and the integers
    summed exactly, ab / sqrt(aa bb) in float64, clamped to [-1, 1] and rounded to the rows'
    dtype. a, b: (M, D)."""

    def fixed(u, v):
        return np.rint(u.astype(np.float64) * v.astype(np.float64) * 2.0**61).astype(np.int64).sum(axis=1)

    ab, aa, bb = fixed(a, b), fixed(a, a), fixed(b, b)
    c = ab.astype(np.float64) / np.sqrt(aa.astype(np.float64) * bb.astype(np.float64))
    return np.clip(c, -1.0, 1.0).astype(a.dtype)


def reference_lists(u: np.ndarray, k: int):
    """Every row's k best by the canonical value descending, then index ascending; the
    values rounded to float32, equal float32 values put in index order."""
    n = len(u)
    i, j = np.divmod(np.arange(n * n), n)
    s = reference_cosine(u[i], u[j]).reshape(n, n).astype(np.float64)
    np.fill_diagonal(s, -np.inf)
    cols = np.arange(n)
    idx = np.stack([np.lexsort((cols, -row))[:k] for row in s])
    w = np.take_along_axis(s, idx, 1).astype(np.float32)
    idx = np.stack([r[np.lexsort((r, -wr))] for r, wr in zip(idx, w, strict=True)])
    return idx, np.take_along_axis(s, idx, 1).astype(np.float32)


def unit(x: torch.Tensor) -> np.ndarray:
    from gpugraph.knn.rows import unit_rows

    return unit_rows(x).numpy()


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("d", [1, 5, 32, 33, 100])
def test_the_three_statements_of_the_canonical_cosine_agree_bitwise(dtype, d):
    rng = np.random.default_rng(d)
    a = unit(torch.from_numpy(rng.normal(size=(64, d)).astype(dtype)))  # the unit rows it is defined on
    b = unit(torch.from_numpy(rng.normal(size=(64, d)).astype(dtype)))
    b[:8] = a[:8]  # identical rows
    b[8:16] = -a[8:16]
    want = reference_cosine(a, b)
    numba = np.array([_select_cpu.cosine(a[m], b[m]) for m in range(64)], dtype=dtype)  # each exact in dtype
    torch_ = _tiles.cosine(torch.from_numpy(a), torch.from_numpy(b)).numpy()
    assert want.dtype == torch_.dtype == dtype
    np.testing.assert_array_equal(numba, want)
    np.testing.assert_array_equal(torch_, want)
    assert (want[:8] == 1).all() and (want[8:16] == -1).all()


def _configurations():
    for precision in ("exact", "bf16"):
        for tile in (None, 7, 13, 40):
            yield precision, tile


@pytest.mark.parametrize("dtype", [torch.float16, torch.float32, torch.float64])
def test_duplicates_tie_to_the_lower_index_on_every_path(dtype):
    # 30 rows alternating two points: row 0's neighbours are the other even rows, all at
    # similarity 1, so the lower indices win: [2, 4, 6, 8, 10] (the review's case:
    # float64, bf16, tile 7 gave [12, 14, 16, 18, 20])
    base = torch.randn(2, 6, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    x = base[torch.arange(30) % 2].to(dtype)
    for precision, tile in _configurations():
        g = gg.knn_graph(x, k=5, precision=precision, tile=tile)
        assert g.indices[0].tolist() == [2, 4, 6, 8, 10], (precision, tile)
        assert g.indices[1].tolist() == [3, 5, 7, 9, 11], (precision, tile)
        assert (g.weights == 1).all(), (precision, tile)  # exactly 1, not 0.99999976


@settings(max_examples=25, deadline=None)
@given(
    seed=st.integers(0, 2**31 - 1),
    n=st.integers(12, 70),
    d=st.integers(1, 40),
    k=st.integers(1, 10),
    dtype=st.sampled_from([torch.float32, torch.float64]),
    coarse=st.booleans(),
)
def test_every_path_returns_the_same_lists_as_the_written_out_definition(seed, n, d, k, dtype, coarse):
    k = min(k, n - 1)
    gen = torch.Generator().manual_seed(seed)
    x = torch.randn(n, d, generator=gen, dtype=torch.float64)
    if coarse:  # small integers: many exact duplicates and equal similarities
        x = torch.randint(-2, 3, (n, d), generator=gen).double()
        x[x.abs().sum(1) == 0, 0] = 1.0
    x[n // 2] = x[0] * 3  # a scaled duplicate
    x = x.to(dtype)
    want_i, want_w = reference_lists(unit(x), k)
    for precision, tile in _configurations():
        g = gg.knn_graph(x, k=k, precision=precision, tile=tile)
        np.testing.assert_array_equal(g.indices.numpy(), want_i, err_msg=f"{precision}, tile {tile}")
        np.testing.assert_array_equal(g.weights.numpy(), want_w, err_msg=f"{precision}, tile {tile}")


def test_the_torch_selector_keeps_the_same_lists_as_the_compiled_one():
    # the selector of CUDA tensors that the kernel does not take, driven on the CPU
    from gpugraph.knn.tiles import RowBlocks, TopK, TorchSelector, walk

    x = torch.randint(-2, 3, (90, 7), generator=torch.Generator().manual_seed(3)).float()
    x[x.abs().sum(1) == 0, 0] = 1.0
    want_i, want_w = reference_lists(unit(x), 6)
    for precision, tile in _configurations():
        top = TopK(90, 6, torch.float32, "cpu")
        walk(TorchSelector(), top, RowBlocks(torch.from_numpy(unit(x))), 0, tile=tile or 90, precision=precision)
        top.sort()
        np.testing.assert_array_equal(top.indices.numpy(), want_i)
        np.testing.assert_array_equal(top.values.numpy(), want_w)


def test_float64_weights_equal_in_float32_are_listed_by_index():
    # two neighbours of row 0 whose float64 similarities differ by less than a float32 step:
    # the set is chosen in float64, and their float32 weights, now equal, go in index order
    x = torch.tensor([[1.0, 0.0], [1.0, 1e-5], [1.0, 1.1e-5], [0.0, 1.0]], dtype=torch.float64)
    g = gg.knn_graph(x, k=2)
    assert g.weights[0, 0] == g.weights[0, 1] == 1.0
    assert g.indices[0].tolist() == [1, 2]
    g = gg.knn_graph(x[[0, 2, 1, 3]], k=2)  # the closer one (1e-5) now has the higher index
    assert g.indices[0].tolist() == [1, 2]


@pytest.mark.parametrize("k", [1, 10])
def test_a_tile_off_by_its_whole_margin_still_gives_the_canonical_lists(k):
    # a selector trusts a tile's values only to within the margin: here every true
    # neighbour is screened (almost) a margin low and every other entry a margin high, with
    # all values in a band narrower than the margin. The rows' lists start empty, so the
    # compiled selector bounds them by the tile's own k-th value: that floor must sit two
    # margins under it, or true neighbours are dropped
    rng = np.random.default_rng(5)
    ta, tb, d, margin = 6, 32 * k + 40, 8, 1e-3
    base = rng.normal(size=d)
    xa = unit(torch.from_numpy(base + 5e-3 * rng.normal(size=(ta, d))).float())
    xb = unit(torch.from_numpy(base + 5e-3 * rng.normal(size=(tb, d))).float())
    c = reference_cosine(np.repeat(xa, tb, 0), np.tile(xb, (ta, 1))).reshape(ta, tb).astype(np.float64)
    assert (c.max(1) - c.min(1)).max() < margin / 2  # near-ties all: the margin decides
    want = np.stack([np.lexsort((np.arange(tb), -row))[:k] for row in c])
    true = np.zeros((ta, tb), dtype=bool)
    np.put_along_axis(true, want, True, 1)
    s = np.where(true, c - 0.999 * margin, c + 0.999 * margin).astype(np.float32)
    values, ids = np.full((ta, k), -np.inf, np.float32), np.full((ta, k), -1, np.int64)
    _select_cpu.Workspace(k, np.float32).select(s, values, ids, 0, col_id0=10_000, margin=margin, xa=xa, xb=xb)
    _select_cpu.sort_rows(values, ids)
    np.testing.assert_array_equal(ids - 10_000, want)
    np.testing.assert_array_equal(values, np.take_along_axis(c, want, 1).astype(np.float32))
