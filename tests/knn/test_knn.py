import numpy as np
import pytest
import torch
from helpers import DEVICES, clustered, exact_knn

import gpugraph as gg


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("n,k,tile", [(50, 1, None), (300, 7, 64), (1000, 10, 150), (777, 31, 100), (900, 256, 300)])
def test_knn_matches_exact_float64_search(device, n, k, tile):
    x, _ = clustered(n=n, d=17, seed=n)
    g = gg.knn_graph(x.to(device), k=k, tile=tile)
    ref_idx, ref_sim = exact_knn(x.numpy(), k)
    assert g.indices.shape == (n, k) and g.indices.dtype == torch.int64
    assert g.weights.dtype == torch.float32
    assert g.indices.device.type == device and g.weights.device.type == device
    idx, w = g.indices.cpu().numpy(), g.weights.cpu().numpy()
    np.testing.assert_allclose(w, ref_sim, atol=1e-5)
    assert not (idx == np.arange(n)[:, None]).any()
    assert (np.diff(w, axis=1) <= 0).all()
    # Neighbour sets equal except where the k-th similarity is a near tie.
    xn = x.double() / x.double().norm(dim=1, keepdim=True)
    own = (xn[torch.arange(n)[:, None]] * xn[torch.from_numpy(idx)]).sum(-1).numpy()
    np.testing.assert_allclose(own, w, atol=1e-5)  # weights are the cosines of those indices
    same = np.array([set(a) == set(b) for a, b in zip(idx, ref_idx, strict=True)])
    gap = ref_sim[:, -1] - np.sort(-np.partition(-own, k - 1, axis=1))[:, 0]
    assert same.mean() > 0.99 and (same | (np.abs(gap) < 1e-5)).all()


def test_tiling_does_not_change_the_result():
    x, _ = clustered(n=500, d=9, seed=3)
    whole = gg.knn_graph(x, k=6)
    for tile in (14, 33, 128):
        tiled = gg.knn_graph(x, k=6, tile=tile)
        assert torch.equal(tiled.indices, whole.indices)
        torch.testing.assert_close(tiled.weights, whole.weights, atol=1e-6, rtol=0)


def test_duplicates_are_listed_and_ties_break_towards_lower_index():
    base = torch.tensor([[1.0, 0.0, 0.0], [0.0, 1.0, 0.0], [0.0, 0.0, 1.0], [1.0, 1.0, 0.0]])
    x = base[[0, 1, 0, 2, 0, 3]]  # rows 0, 2, 4 are the same point
    g = gg.knn_graph(x, k=2)
    assert g.indices[0].tolist() == [2, 4]
    assert g.indices[2].tolist() == [0, 4]
    assert g.indices[4].tolist() == [0, 2]
    torch.testing.assert_close(g.weights[0], torch.ones(2))
    # Row 1 = e_y: equally far from e_x (rows 0, 2, 4) and e_z; nearest is row 5 = (1, 1, 0).
    assert g.indices[1].tolist() == [5, 0]


@pytest.mark.parametrize("k", [1, 2, 5, 64, 255])
def test_large_lists_keep_the_tie_rule(k):
    # 40 axis directions (scaled), each 8 times in shuffled order: every similarity is exactly
    # 1 or 0 in any arithmetic, so every list is ties only; they go to the lower index, and
    # the lists come out best first
    axes = torch.randperm(320, generator=torch.Generator().manual_seed(k)) % 40
    x = torch.nn.functional.one_hot(axes, 40).float() * (torch.rand(320, 1) * 9 + 0.5)
    g = gg.knn_graph(x, k=k, tile=2 * k + 2)
    s = (axes[:, None] == axes[None, :]).double().numpy()
    np.fill_diagonal(s, -np.inf)
    cols = np.arange(320)
    for row in range(0, 320, 7):
        want = np.lexsort((cols, -s[row]))[:k]  # value descending, then index ascending
        assert g.indices[row].tolist() == want.tolist()


def test_accepts_numpy_float16_and_float64():
    x, _ = clustered(n=200, d=8, seed=1)
    ref = gg.knn_graph(x, k=4)
    for arr in (x.numpy(), x.numpy().astype(np.float64), x.to(torch.float16), x.to(torch.bfloat16)):
        g = gg.knn_graph(arr, k=4)
        assert g.indices.device.type == "cpu"
        same = (g.indices.sort(1).values == ref.indices.sort(1).values).all(1).float().mean()
        assert same > (0.9 if arr.dtype in (torch.float16, torch.bfloat16) else 0.999)


def test_scale_does_not_matter():
    x, _ = clustered(n=300, d=8, seed=2)
    scale = torch.rand(300, 1) * 100 + 0.01
    a, b = gg.knn_graph(x, k=5), gg.knn_graph(x * scale, k=5)
    assert (a.indices == b.indices).float().mean() > 0.99


@pytest.mark.parametrize(
    "x,k,error,match",
    [
        (torch.zeros(4, 3, 2) + 1, 2, ValueError, r"must be 2-D \(N, D\), got shape \(4, 3, 2\)"),
        (torch.ones(5, 3, dtype=torch.int64), 2, TypeError, "must be floating point, got dtype"),
        (torch.tensor([[1.0, 0], [float("nan"), 1], [0, 1]]), 1, ValueError, r"1 rows .*NaN or Inf .*row 1"),
        (torch.tensor([[1.0, 0], [0, 1], [float("inf"), 1]]), 1, ValueError, "NaN or Inf"),
        (
            torch.tensor([[1.0, 0], [0, 0], [0, 1], [0, 0]]),
            1,
            ValueError,
            r"2 rows of x have zero norm \(first: row 1\)",
        ),
        (torch.ones(5, 3), 0, ValueError, r"1 <= k < N .* got k=0 with N=5"),
        (torch.ones(5, 3), 5, ValueError, r"1 <= k < N .* got k=5 with N=5"),
        (torch.ones(5, 3), 2.0, TypeError, "k must be an integer"),
        (torch.ones(0, 3), 1, ValueError, "empty"),
        ({"a": 1}, 1, TypeError, "must be a torch tensor, a NumPy array or a CuPy array"),
        ("abc", 1, FileNotFoundError, "x: no such file 'abc'"),
        ("pyproject.toml", 1, ValueError, "is not an .npy file; save the matrix with numpy.save"),
    ],
)
def test_bad_input_is_rejected_with_a_clear_message(x, k, error, match):
    with pytest.raises(error, match=match):
        gg.knn_graph(x, k=k)


@pytest.mark.parametrize(
    "indices,weights,error,match",
    [
        ([[1], [0], [0]], [[1.0], [1.0]], ValueError, "shape of indices"),
        ([[1], [1], [0]], [[1.0], [1.0], [1.0]], ValueError, "node 1 lists itself"),
        ([[1, 1], [0, 2], [0, 1]], torch.ones(3, 2), ValueError, "node 0 lists the same neighbour twice"),
        ([[3], [0], [0]], [[1.0], [1.0], [1.0]], ValueError, r"lie in \[0, N\)"),
        ([[1.0], [0.0]], [[1.0], [1.0]], TypeError, "indices must be integers"),
        ([[1], [0]], [[1], [1]], TypeError, "weights must be floating point"),
        ([[1], [0]], [[1.0], [float("nan")]], ValueError, "NaN or Inf"),
        ([1, 0], [1.0, 1.0], ValueError, "indices must be 2-D"),
    ],
)
def test_knngraph_validates_its_lists(indices, weights, error, match):
    with pytest.raises(error, match=match):
        gg.KnnGraph(torch.as_tensor(indices), torch.as_tensor(weights))


def test_unknown_mode_is_rejected():
    g = gg.knn_graph(torch.randn(10, 3), k=2)
    with pytest.raises(ValueError, match=r"mode must be one of \('mean', 'max', 'mutual'\), got 'sum'"):
        g.adjacency(mode="sum")


@pytest.mark.parametrize("device", DEVICES)
def test_bf16_screen_returns_the_exact_neighbours(device):
    x, _ = clustered(n=1200, d=40, classes=6, spread=0.8, seed=7)
    exact = gg.knn_graph(x.to(device), k=9, tile=300)
    screened = gg.knn_graph(x.to(device), k=9, tile=300, precision="bf16")
    assert torch.equal(screened.indices, exact.indices)
    torch.testing.assert_close(screened.weights, exact.weights, atol=2e-6, rtol=0)


def test_bf16_screen_falls_back_to_exact_tiles_on_tight_clusters():
    # Every row within 1e-3 of its neighbours: the screen would keep whole tiles.
    x = torch.ones(400, 16) + 1e-3 * torch.randn(400, 16, generator=torch.Generator().manual_seed(0))
    exact = gg.knn_graph(x, k=5, tile=100)
    screened = gg.knn_graph(x, k=5, tile=100, precision="bf16")
    assert torch.equal(screened.indices, exact.indices)


def test_precision_errors():
    with pytest.raises(ValueError, match=r"precision must be one of \('exact', 'bf16', 'tf32'\), got 'fp8'"):
        gg.knn_graph(torch.randn(10, 3), k=2, precision="fp8")
    with pytest.raises(ValueError, match="'tf32' needs a CUDA device"):
        gg.knn_graph(torch.randn(10, 3), k=2, precision="tf32")


@pytest.mark.parametrize("device", DEVICES)
def test_rows_of_extreme_magnitude_are_normalised_safely(device):
    # |row|^2 overflows float32 at 1e20: the rows must still get their directions.
    big = torch.tensor([[1e20, 1e20], [1e20, -1e20], [1e20, 0.9e20], [1e20, 0.0]], device=device)
    g = gg.knn_graph(big, k=1)
    # by hand: row 1 = (1, -1) is at 45 degrees from row 3 = (1, 0), nearer than from row 2
    assert g.indices.flatten().tolist() == [2, 3, 0, 2]
    ref_idx, ref_sim = exact_knn(big.cpu().double().numpy() / 1e20, 1)
    assert g.indices.cpu().numpy().tolist() == ref_idx.tolist()
    np.testing.assert_allclose(g.weights.cpu().numpy(), ref_sim, atol=1e-6)
    # Valid rows near 1e-23 (their squares underflow float32) are not zero rows.
    x, _ = clustered(n=200, d=8, seed=4)
    for scale in (1e-23, 1e-38, 1e20):
        scaled = gg.knn_graph((x.double() * scale).float().to(device), k=5)
        assert torch.equal(scaled.indices.cpu(), gg.knn_graph(x, k=5).indices)
    tiny64 = gg.knn_graph(x.double().to(device) * 1e-300, k=5)  # squares underflow float64
    assert torch.equal(tiny64.indices.cpu(), gg.knn_graph(x.double(), k=5).indices)


@pytest.mark.parametrize(
    "tile,error,match",
    [
        (-5, ValueError, "tile must be a positive integer .* got -5"),
        (0, ValueError, "tile must be a positive integer .* got 0"),
        (2.5, TypeError, "tile must be a positive integer .* got 2.5"),
        ("a", TypeError, "tile must be a positive integer .* got 'a'"),
        (True, TypeError, "tile must be a positive integer .* got True"),
    ],
)
def test_tile_must_be_a_positive_integer(tile, error, match):
    with pytest.raises(error, match=match):
        gg.knn_graph(torch.randn(20, 3), k=2, tile=tile)


def test_a_cpu_call_leaves_the_users_matmul_precision_alone():
    saved = torch.get_float32_matmul_precision()
    try:
        for setting in ("medium", "high", "highest"):
            torch.set_float32_matmul_precision(setting)
            before = torch.backends.mkldnn.matmul.fp32_precision
            x, _ = clustered(n=300, d=16, seed=1)
            g = gg.knn_graph(x, k=5)
            assert torch.get_float32_matmul_precision() == setting  # raised here before
            assert torch.backends.mkldnn.matmul.fp32_precision == before
            _, ref_sim = exact_knn(x.numpy(), 5)
            np.testing.assert_allclose(g.weights.numpy(), ref_sim, atol=1e-6)  # exact under "medium" too
    finally:
        torch.set_float32_matmul_precision(saved)


def test_precision_scopes_set_and_restore_only_what_they_must():
    from gpugraph.knn.precision import _current, fp32_matmul

    mkl = torch.backends.mkldnn.matmul
    saved = mkl.fp32_precision
    try:
        mkl.fp32_precision = "bf16"
        with fp32_matmul("cpu", "ieee"):
            assert _current("cpu") == "ieee"
            with fp32_matmul("cpu", "ieee"):  # the same arithmetic nests
                assert _current("cpu") == "ieee"
            assert _current("cpu") == "ieee"
        assert mkl.fp32_precision == "bf16"
        mkl.fp32_precision = "none"
        with fp32_matmul("cpu", "ieee"):  # already IEEE: nothing is touched
            assert mkl.fp32_precision == "none"
    finally:
        mkl.fp32_precision = saved


def test_a_scope_asking_for_other_arithmetic_waits_for_the_live_one():
    # Flags only: this runs on machines without a GPU, as the CUDA path would.
    import threading
    import time

    from gpugraph.knn.precision import _current, fp32_matmul

    matmul = torch.backends.cuda.matmul
    saved = matmul.fp32_precision
    seen = []

    def tf32_call():
        with fp32_matmul("cuda", "tf32"):
            seen.append(("tf32 in", _current("cuda")))

    try:
        matmul.fp32_precision = "none"
        with fp32_matmul("cuda", "ieee"):
            other = threading.Thread(target=tf32_call)
            other.start()
            time.sleep(0.2)  # the tf32 scope must not enter while this exact one lives
            seen.append(("ieee still", _current("cuda")))
        other.join(timeout=5)
        assert seen == [("ieee still", "ieee"), ("tf32 in", "tf32")]
        assert matmul.fp32_precision == "none"
    finally:
        matmul.fp32_precision = saved


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_compiled_unit_rows_match_a_float64_reference(dtype):
    # the CPU's one-pass unit rows (gpugraph/kernels/rows_cpu.py): each row's largest |entry| exactly,
    # and its direction to a few units of the dtype's rounding, at every scale a row can have,
    # for strided input too
    from gpugraph.knn.rows import row_maxabs, unit_rows

    rng = np.random.default_rng(3)
    scales = np.array([1e-40, 1e-23, 1e-3, 1.0, 1e20, 1e37] if dtype == torch.float32 else [1e-300, 1.0, 1e300])
    base = rng.standard_normal((60, 37)) * scales[rng.integers(0, len(scales), 60)][:, None]
    x = torch.from_numpy(base).to(dtype)
    ref = x.double().numpy()
    for given in (x, x.T.contiguous().T):  # C- and Fortran-ordered
        np.testing.assert_array_equal(row_maxabs(given).numpy(), np.abs(ref).max(axis=1))
        scaled = ref / np.abs(ref).max(axis=1, keepdims=True)
        expected = scaled / np.linalg.norm(scaled, axis=1, keepdims=True)
        eps = torch.finfo(dtype).eps
        u = unit_rows(given)
        assert u.dtype == dtype and u.is_contiguous()
        np.testing.assert_allclose(u.double().numpy(), expected, rtol=0, atol=8 * eps)
    nan = x.clone()
    nan[7, 3] = float("nan")
    assert torch.isnan(row_maxabs(nan)[7]) and torch.isfinite(row_maxabs(nan)[:7]).all()
