"""The CUDA kernels: they compile and ship everywhere; on a GPU they equal the CPU path.

The GPU tests skip with a reason where torch sees no CUDA device. The tests of the graph
measures in test_graph.py and test_knn.py also run on CUDA there (DEVICES).
"""

import ctypes
import importlib.resources
import importlib.util
import os
import re
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import networkx as nx
import numpy as np
import pytest
import torch
from helpers import clustered

import gpugraph as gg
from gpugraph.graph.edges import edge_rows
from gpugraph.graph.motifs import oriented_csr
from gpugraph.kernels import cuda as _kernels
from gpugraph.kernels.topk_cpu import fixed_norms
from gpugraph.knn.build import search
from gpugraph.knn.rows import unit_rows
from gpugraph.knn.tiles import CompiledSelector, CudaSelector, RowBlocks, TorchSelector

tiles_module = sys.modules["gpugraph.knn.tiles"]

SOURCES = sorted(p.name for p in importlib.resources.files("gpugraph.kernels").iterdir() if p.name.endswith(".cu"))
cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device (none visible to torch)")


def test_every_kernel_source_is_found():
    assert SOURCES == ["graph.cu", "topk.cu"]
    assert "topk_merge" in _kernels.source("topk.cu")


@pytest.mark.skipif(shutil.which("nvcc") is None, reason="nvcc is not installed")
@pytest.mark.parametrize("name", SOURCES)
@pytest.mark.parametrize("arch", ["sm_80", "sm_90"])
def test_kernel_compiles_with_nvcc(tmp_path, name, arch):
    path = importlib.resources.files("gpugraph.kernels").joinpath(name)
    out = subprocess.run(
        [
            "nvcc",
            f"-arch={arch}",
            *_kernels._OPTIONS,
            "--Werror",
            "all-warnings",
            "-c",
            str(path),
            "-o",
            str(tmp_path / "k.o"),
        ],
        capture_output=True,
        text=True,
        check=False,
    )
    assert out.returncode == 0, out.stderr


def _nvrtc():
    """CuPy's NVRTC binding, when CuPy and the NVRTC library are installed (no GPU needed)."""
    try:
        from cupy_backends.cuda.libs import nvrtc

        nvrtc.getVersion()
        return nvrtc
    except Exception:  # CuPy missing, or its NVRTC library not found
        return None


@pytest.mark.skipif(_nvrtc() is None, reason="CuPy's NVRTC (pip install cupy-cuda13x nvidia-cuda-nvrtc) is missing")
@pytest.mark.parametrize("name", SOURCES)
@pytest.mark.parametrize("arch", ["compute_80", "compute_90"])
def test_nvrtc_builds_every_kernel_launched_with_the_run_time_options(name, arch):
    # what cupy.RawModule compiles on the device, without one: the package's options, and
    # the kernel names gpugraph launches (a typo fails here, not on the GPU)
    nvrtc = _nvrtc()
    program = nvrtc.createProgram(_kernels.source(name), name, (), ())
    try:
        nvrtc.compileProgram(program, (*_kernels._OPTIONS, f"--gpu-architecture={arch}"))
    except Exception as exc:
        pytest.fail(f"NVRTC cannot compile {name}: {exc}\n{nvrtc.getProgramLog(program)}")
    ptx = nvrtc.getPTX(program)
    ptx = ptx.decode() if isinstance(ptx, bytes) else ptx
    entries = set(re.findall(r"\.entry\s+(\w+)", ptx))
    assert entries == set(_kernels.KERNELS[name])


def test_a_launch_of_an_unknown_kernel_is_refused():
    with pytest.raises(gg.GpuGraphError, match=r"no kernel 'topk_merg' in gpugraph/kernels/topk.cu"):
        _kernels._launch(torch.device("cuda", 0), "topk.cu", "topk_merg", 1, ())


@pytest.mark.skipif(shutil.which("nvcc") is None, reason="nvcc is not installed")
def test_nvcc_builds_every_kernel_without_spills_at_half_occupancy_or_more():
    # benchmarks/kernel_resources.py: nvcc's --resource-usage at the launch shape, sm_80 and sm_90
    spec = importlib.util.spec_from_file_location(
        "kernel_resources", Path(__file__).resolve().parents[2] / "benchmarks" / "kernel_resources.py"
    )
    resources = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(resources)
    for name, kernels in _kernels.KERNELS.items():
        assert set(resources.resources(name, "sm_80")) == set(kernels)
    rows = resources.table(["sm_80", "sm_90"])
    assert len(rows) == 2 * sum(len(k) for k in _kernels.KERNELS.values())
    for r in rows:
        assert r["spill_stores"] == r["spill_loads"] == 0, r
        assert r["occupancy"] >= 0.5, r
    # the occupancy arithmetic, by hand for the A100: 48 registers x 32 lanes = 1536 a warp, 8
    # warps a block = 12288, 65536 // 12288 = 5 blocks = 40 of 64 warps
    assert resources.occupancy(48, 16392, 256, "sm_80") == (40 / 64, 5, "registers")
    assert resources.occupancy(20, 0, 256, "sm_80") == (1.0, 8, "threads")
    assert resources.occupancy(16, 60_000, 256, "sm_80")[1:] == (2, "shared memory")  # 164 KiB // 61 024 B


@pytest.mark.skipif(shutil.which("nvcc") is None, reason="nvcc is not installed")
@pytest.mark.parametrize(
    "define,message",
    [
        ("-DTHREADS=100", "THREADS must be a multiple of 32"),
        ("-DSORT_CAP=2000", "SORT_CAP must be a power of two"),
        ("-DMAX_K=1900", "must hold two rounds of THREADS entries"),
    ],
)
def test_kernel_invariants_are_checked_at_compile_time(tmp_path, define, message):
    path = importlib.resources.files("gpugraph.kernels").joinpath("topk.cu")
    name = define.split("=")[0][2:]
    options = [o for o in _kernels._OPTIONS if not o.startswith(f"-D{name}=")] + [define]
    out = subprocess.run(
        ["nvcc", "-arch=sm_80", *options, "-c", str(path), "-o", str(tmp_path / "k.o")],
        capture_output=True,
        text=True,
        check=False,
    )
    assert out.returncode != 0 and message in out.stderr


def test_kernel_sources_ship_in_the_wheel(tmp_path):
    pytest.importorskip("hatchling")  # the build backend, for a wheel built without isolation
    root = importlib.resources.files("gpugraph").joinpath("..")
    out = subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "wheel",
            "--no-deps",
            "--no-build-isolation",
            "-q",
            "-w",
            str(tmp_path),
            str(root),
        ],
        capture_output=True,
        text=True,
        check=False,
    )
    assert out.returncode == 0, out.stderr
    (wheel,) = tmp_path.glob("gpugraph-*.whl")
    names = zipfile.ZipFile(wheel).namelist()
    assert {f"gpugraph/kernels/{s}" for s in SOURCES} <= set(names)


def test_missing_cupy_is_a_clear_error(monkeypatch):
    monkeypatch.setitem(sys.modules, "cupy", None)  # makes `import cupy` raise ImportError
    with pytest.raises(gg.GpuGraphError, match=r'CuPy is not installed; pip install "gpugraph\[gpu\]"'):
        _kernels._cupy()


def test_kernel_wrappers_check_their_inputs():
    v = torch.zeros(4, 2)
    i = torch.zeros(4, 2, dtype=torch.int64)
    s = torch.zeros(2, 2)
    with pytest.raises(ValueError, match=r"best_i must have best_v's shape \(4, 2\), got \(4, 3\)"):
        _kernels.topk_merge(s, 0, 0, v, torch.zeros(4, 3, dtype=torch.int64))
    with pytest.raises(ValueError, match="takes 1 <= k <= 256, got k=300"):
        _kernels.topk_merge(s, 0, 0, torch.zeros(4, 300), torch.zeros(4, 300, dtype=torch.int64))
    with pytest.raises(ValueError, match=r"tile rows 3..5 fall outside the 4 rows of best_v"):
        _kernels.topk_merge(s, 3, 0, v, i)
    with pytest.raises(ValueError, match=r"needs the unit rows xr and xc"):
        _kernels.topk_merge(s, 0, 0, v, i, margin=0.1)
    n2 = torch.ones(2, dtype=torch.int64)
    with pytest.raises(ValueError, match=r"xr must be \(2, D\) and xc \(2, D\), got \(3, 5\) and \(2, 5\)"):
        _kernels.topk_merge(s, 0, 0, v, i, margin=0.1, xr=torch.zeros(3, 5), xc=torch.zeros(2, 5), nr=n2, nc=n2)
    with pytest.raises(ValueError, match=r"nr must be \(2,\) and nc \(2,\), got \(3,\) and \(2,\)"):
        _kernels.topk_merge(
            s,
            0,
            0,
            v,
            i,
            margin=0.1,
            xr=torch.zeros(2, 5),
            xc=torch.zeros(2, 5),
            nr=torch.ones(3, dtype=torch.int64),
            nc=n2,
        )
    with pytest.raises(ValueError, match=r"tile must be a CUDA tensor, got one on cpu; move it with .cuda\(\)"):
        _kernels.topk_merge(torch.zeros(2, 2), 0, 0, v, i)
    with pytest.raises(TypeError, match=re.escape("weights must be float32 or float64, got torch.float16")):
        _kernels.edge_partners(i, v.half())
    with pytest.raises(TypeError, match="indptr must be a torch tensor, got ndarray"):
        _kernels.triangle_count(np.zeros(3), torch.zeros(2))


def test_device_argument_errors():
    x = torch.randn(20, 3)
    assert gg.knn_graph(x, k=3, device="cpu").device.type == "cpu"
    with pytest.raises(ValueError, match="device must be a torch device or a string like 'cuda:0', got 'gpu0'"):
        gg.knn_graph(x, k=3, device="gpu0")
    with pytest.raises(ValueError, match="device must be a CPU or CUDA device, got 'meta'"):
        gg.knn_graph(x, k=3, device="meta")
    if not torch.cuda.is_available():
        with pytest.raises(gg.GpuGraphError, match="torch sees no CUDA device"):
            gg.knn_graph(x, k=3, device="cuda")


@pytest.mark.parametrize("selector", [TorchSelector(), CompiledSelector(7, torch.float32)], ids=["torch", "compiled"])
def test_streamed_row_blocks_give_the_resident_result(selector):
    x, _ = clustered(n=700, d=16, seed=5)
    xn = torch.nn.functional.normalize(x, dim=1)
    resident = search(RowBlocks(xn, xn.device, streamed=False), 7, 100, "exact", selector)
    streamed = search(RowBlocks(xn, xn.device, streamed=True), 7, 100, "exact", selector)
    assert torch.equal(resident[0], streamed[0]) and torch.equal(resident[1], streamed[1])


def _kernel_contract(tile, row0, col0, best_v, best_i, *, transpose=False, margin=0.0, row_id0=None, xr=None, xc=None):
    """topk.cu's contract in torch: merge a tile into the running best k of its rows."""
    s = tile.T if transpose else tile
    rows, cols = s.shape
    if margin > 0:  # screened: only entries within the margin of the row's k-th are candidates,
        kth = best_v[row0 : row0 + rows, -1:]  # and only those are re-scored; the rest are dropped
        s = torch.where(s >= kth - margin, xr @ xc.T, -float("inf"))
    grow = torch.arange(row0, row0 + rows)[:, None] + ((row_id0 - row0) if row_id0 is not None else 0)
    gcol = torch.arange(col0, col0 + cols).expand(rows, cols)
    v = torch.cat([best_v[row0 : row0 + rows], s.masked_fill(gcol == grow, -float("inf"))], dim=1)
    i = torch.cat([best_i[row0 : row0 + rows], gcol], dim=1)
    order = torch.argsort(i, dim=1, stable=True)  # value descending, then index ascending
    order = order.gather(1, torch.argsort(v.gather(1, order), dim=1, descending=True, stable=True))
    k = best_v.shape[1]
    best_v[row0 : row0 + rows] = v.gather(1, order)[:, :k]
    best_i[row0 : row0 + rows] = i.gather(1, order)[:, :k]


@pytest.fixture
def host_topk(monkeypatch, host_kernels):
    """_kernels.topk_merge replaced by the kernel source compiled for the host (CPU tensors):
    the real tile scheduler and CudaSelector drive the real kernel code. Records margins."""
    margins = []

    def merge(
        tile,
        row0,
        col0,
        best_v,
        best_i,
        *,
        transpose=False,
        margin=0.0,
        row_id0=None,
        xr=None,
        xc=None,
        nr=None,
        nc=None,
    ):
        margins.append(margin)

        def as_np(t):
            return t.numpy() if t is not None else None

        _host_merge(
            host_kernels,
            tile.numpy(),
            row0,
            col0,
            best_v.numpy(),
            best_i.numpy(),
            transpose=transpose,
            margin=margin,
            row_id0=row_id0,
            xr=as_np(xr),
            xc=as_np(xc),
            nr=as_np(nr),
            nc=as_np(nc),
        )

    monkeypatch.setattr(_kernels, "topk_merge", merge)
    return margins


@pytest.mark.parametrize(
    "precision,transpose_copy", [("exact", True), ("exact", False), ("bf16", True), ("tf32", False)]
)
def test_the_scheduler_with_the_host_built_kernel_gives_the_exact_graph(host_topk, precision, transpose_copy):
    # The GPU path (tiles, transposed offers, margins, the kernel source) run on the CPU; the
    # CUDA launch wiring itself is checked on a GPU below.
    x, _ = clustered(n=200, d=20, seed=9)
    xn = unit_rows(x)
    indices, weights = search(RowBlocks(xn, xn.device), 8, 50, precision, CudaSelector(transpose_copy))
    ref = gg.knn_graph(x, k=8)
    assert torch.equal(indices, ref.indices)
    assert torch.equal(weights, ref.weights)  # the kernel's canonical cosine: the CPU path's bits


def test_a_margin_below_the_screens_rounding_fails(host_topk, monkeypatch):
    # The kernel drops what the screen drops: with a margin far below the bf16 rounding
    # error, true neighbours are lost, so the scheduler test above would catch a bad bound.
    monkeypatch.setattr(tiles_module, "screen_error", lambda precision, d: 1e-30 if precision != "exact" else 0.0)
    x, _ = clustered(n=300, d=20, seed=9)
    xn = torch.nn.functional.normalize(x, dim=1)
    indices, _ = search(RowBlocks(xn, xn.device), 8, 75, "bf16", CudaSelector())
    assert not torch.equal(indices, gg.knn_graph(x, k=8).indices)


@pytest.mark.parametrize(
    "selector",
    [CudaSelector(), TorchSelector(), CompiledSelector(5, torch.float32)],
    ids=["kernel", "torch", "compiled"],
)
def test_the_scheduler_recomputes_a_tile_whose_screen_keeps_too_much(host_topk, monkeypatch, selector):
    # tiles of 70 rows, so that a screen can keep more than 64 candidates a row
    tight = torch.ones(210, 16) + 1e-3 * torch.randn(210, 16, generator=torch.Generator().manual_seed(0))
    ref = gg.knn_graph(tight, k=5, tile=70)
    margins = []
    monkeypatch.setattr(tiles_module, "gemm", _recording(tiles_module.gemm, margins))
    xn = unit_rows(tight)  # the library's own unit rows: the cosines tie to a few ulps here
    indices, weights = search(RowBlocks(xn, xn.device), 5, 70, "bf16", selector)
    assert torch.equal(indices, ref.indices) and torch.equal(weights, ref.weights)
    assert margins == ["exact"] * 3 + ["bf16", "exact"] * 3  # 3 diagonal tiles; every screened one recomputed
    margins.clear()
    x, _ = clustered(n=210, d=16, seed=1)  # spread data: the screen is used
    search(RowBlocks(torch.nn.functional.normalize(x, dim=1), xn.device), 5, 70, "bf16", selector)
    assert margins == ["exact"] * 3 + ["bf16"] * 3


def _recording(gemm, calls):
    def wrapped(a, b, precision):
        calls.append(precision)
        return gemm(a, b, precision)

    return wrapped


def _count_like_the_kernel(indptr, cols, labels):
    """graph.cu's triangle_count, one oriented edge at a time, in Python."""
    indptr, cols = indptr.tolist(), cols.tolist()
    total, per_node, motifs = 0, np.zeros(len(indptr) - 1, dtype=np.int64), [0, 0, 0]
    for u in range(len(indptr) - 1):
        out_u = set(cols[indptr[u] : indptr[u + 1]])
        for v in cols[indptr[u] : indptr[u + 1]]:
            for w in out_u.intersection(cols[indptr[v] : indptr[v + 1]]):
                total += 1
                per_node[[u, v, w]] += 1
                classes = len({labels[u], labels[v], labels[w]})
                motifs[{1: 0, 2: 1, 3: 2}[classes]] += 1
    return total, per_node, motifs


@pytest.mark.parametrize("seed", [0, 1])
def test_oriented_csr_finds_every_triangle_once(seed):
    x, labels = clustered(n=150, d=4, classes=3, seed=seed)
    g = gg.knn_graph(x, k=6)
    indptr, cols = oriented_csr(edge_rows(g, "max"))
    for u in range(g.n):  # rows sorted, every edge rising in (degree, index) rank
        row = cols[indptr[u] : indptr[u + 1]]
        assert torch.equal(row, row.sort().values)
    total, per_node, motifs = _count_like_the_kernel(indptr, cols, labels)
    ref = nx.triangles(g.to_networkx("max", weighted=False))
    assert total == sum(ref.values()) // 3 == gg.triangles(g)
    assert per_node.tolist() == [ref[i] for i in range(g.n)]
    assert dict(zip(["same", "pair", "distinct"], motifs, strict=True)) == gg.motifs(g, labels)


# ---- the kernel sources run on the host (tests/kernels/cuda_host/shim.h) ---------------------------


SANITIZE = os.environ.get("GPUGRAPH_SANITIZE", "")  # "address" (with undefined) or "thread": make sanitize
HOST_THREADS = int(os.environ.get("GPUGRAPH_HOST_THREADS", "32"))
HOST_SLOTS = int(os.environ.get("GPUGRAPH_HOST_SLOTS", "1"))  # blocks in flight at once: 1 or 2
_SANITIZERS = {
    "": [],
    "address": ["-fsanitize=address,undefined", "-fno-sanitize-recover=undefined"],
    "thread": ["-fsanitize=thread"],
}


@pytest.fixture(scope="module")
def host_kernels(tmp_path_factory):
    """kernels/*.cu compiled as C++ with a CUDA shim: every CUDA thread a std::thread.

    By default 32 threads a block (the GPU uses 256; the kernels take any multiple of 32)
    and one block at a time: fewer std::threads to start, and the candidate buffer flushes
    more often. ``make sanitize`` builds it at the GPU's 256 (GPUGRAPH_HOST_THREADS) with two
    blocks in flight (GPUGRAPH_HOST_SLOTS), with AddressSanitizer and UndefinedBehaviorSanitizer,
    then with ThreadSanitizer (GPUGRAPH_SANITIZE), the process started with the sanitizer's
    runtime preloaded."""
    if shutil.which("g++") is None:
        pytest.skip("g++ is not installed")
    if SANITIZE not in _SANITIZERS:
        pytest.fail(f"GPUGRAPH_SANITIZE must be one of {sorted(_SANITIZERS)}, got {SANITIZE!r}")
    here = Path(__file__).parent / "cuda_host"
    lib = tmp_path_factory.mktemp("host") / "kernels.so"
    defines = [
        f"-DTHREADS={HOST_THREADS}",
        f"-DHOST_SLOTS={HOST_SLOTS}",
        f"-DSORT_CAP={_kernels.SORT_CAP}",
        f"-DMAX_K={_kernels.MAX_K}",
    ]
    flags = _SANITIZERS[SANITIZE] + (["-g", "-fno-omit-frame-pointer"] if SANITIZE else [])
    out = subprocess.run(
        [
            "g++",
            "-std=c++20",
            "-O1",
            "-shared",
            "-fPIC",
            "-pthread",
            *flags,
            *defines,
            str(here / "launch.cpp"),
            "-o",
            str(lib),
        ],
        capture_output=True,
        text=True,
        check=False,
    )
    assert out.returncode == 0, out.stderr
    return ctypes.CDLL(str(lib))


def _ptr(a: np.ndarray):
    return a.ctypes.data_as(ctypes.c_void_p)


def _host_merge(
    lib,
    tile,
    row0,
    col0,
    best_v,
    best_i,
    *,
    transpose=False,
    margin=0.0,
    row_id0=None,
    xr=None,
    xc=None,
    nr=None,
    nc=None,
):
    """_kernels.topk_merge's launch, on NumPy arrays, through the host build."""
    tile = np.ascontiguousarray(tile, dtype=np.float32)
    rows, cols = (tile.shape[1], tile.shape[0]) if transpose else tile.shape
    strides = (1, tile.shape[1]) if transpose else (tile.shape[1], 1)
    xr = np.ascontiguousarray(xr if xr is not None else tile, dtype=np.float32)
    xc = np.ascontiguousarray(xc if xc is not None else tile, dtype=np.float32)
    nr = np.ascontiguousarray(nr if nr is not None else fixed_norms(xr), dtype=np.int64)
    nc = np.ascontiguousarray(nc if nc is not None else fixed_norms(xc), dtype=np.int64)
    lib.host_topk_merge(
        _ptr(tile),
        ctypes.c_longlong(strides[0]),
        ctypes.c_longlong(strides[1]),
        ctypes.c_int(rows),
        ctypes.c_int(cols),
        ctypes.c_longlong(row0),
        ctypes.c_longlong(row0 if row_id0 is None else row_id0),
        ctypes.c_longlong(col0),
        _ptr(best_v),
        _ptr(best_i),
        ctypes.c_int(best_v.shape[1]),
        ctypes.c_float(margin),
        _ptr(xr),
        _ptr(xc),
        _ptr(nr),
        _ptr(nc),
        ctypes.c_int(xr.shape[1] if margin > 0 else 0),
    )


@pytest.mark.parametrize("k", [1, 9, 200])
def test_topk_source_on_the_host_follows_its_contract(host_kernels, k):
    rng = np.random.default_rng(k)
    n, d = 400, 16
    x = rng.normal(size=(n, d)).astype(np.float32)
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    x[5] = x[3]  # an exact duplicate: equal similarities, ties go to the lower index
    s = np.round(x @ x.T, 2).astype(np.float32)  # coarse values: many ties
    state = [(np.full((n, k), -np.inf, np.float32), np.full((n, k), -1, np.int64)) for _ in range(2)]
    ref = next((torch.from_numpy(v.copy()), torch.from_numpy(i.copy())) for v, i in state[:1])
    offers = [  # (rows block, columns block, transpose): a diagonal tile, then both sides of one
        ((0, 40), (0, 40), False),
        ((0, 40), (40, 400), False),
        ((0, 40), (40, 400), True),
    ]
    hv, hi = state[0]
    for (a0, a1), (b0, b1), transpose in offers:
        tile = s[a0:a1, b0:b1]
        r0, c0 = (b0, a0) if transpose else (a0, b0)
        _host_merge(host_kernels, tile, r0, c0, hv, hi, transpose=transpose)
        _kernel_contract(torch.from_numpy(tile), r0, c0, *ref, transpose=transpose)
    np.testing.assert_array_equal(hi, ref[1].numpy())
    np.testing.assert_array_equal(hv, ref[0].numpy())


@pytest.mark.parametrize("k", [1, _kernels.MAX_K])
def test_topk_source_on_the_host_takes_ids_up_to_the_int32_limit(host_kernels, k):
    # the kernel keeps ids as int32 in shared memory; the wrapper admits ids up to 2^31 - 2:
    # a ragged tile (45 x 700) whose rows and columns end there, ties among its values
    rng = np.random.default_rng(k)
    rows, cols = 45, 700
    tile = np.round(rng.normal(size=(rows, cols)), 1).astype(np.float32)
    col0 = 2**31 - 2 - cols
    row_id0 = col0 + 100  # rows and columns overlap: the pairs of equal ids are skipped
    hv, hi = np.full((rows, k), -np.inf, np.float32), np.full((rows, k), -1, np.int64)
    _host_merge(host_kernels, tile, 0, col0, hv, hi, row_id0=row_id0)
    rv, ri = torch.full((rows, k), -float("inf")), torch.full((rows, k), -1, dtype=torch.int64)
    _kernel_contract(torch.from_numpy(tile), 0, col0, rv, ri, row_id0=row_id0)
    np.testing.assert_array_equal(hi, ri.numpy())
    np.testing.assert_array_equal(hv, rv.numpy())
    assert col0 <= hi.min() and hi.max() <= 2**31 - 3 and (k == 1 or hi.max() == 2**31 - 3)
    with pytest.raises(ValueError, match=r"must lie in 0..2\^31 - 2"):
        _kernels.topk_merge(torch.from_numpy(tile), 0, col0 + 1, torch.from_numpy(hv), torch.from_numpy(hi))


@pytest.mark.parametrize("k", [3, 250])
def test_topk_source_on_the_host_flushes_a_long_row_many_times(host_kernels, k):
    # 5000 columns against an empty state: the candidate buffer (2048 - k) fills repeatedly
    rng = np.random.default_rng(k)
    tile = np.round(rng.normal(size=(3, 5000)), 1).astype(np.float32)  # many ties
    hv, hi = np.full((5003, k), -np.inf, np.float32), np.full((5003, k), -1, np.int64)
    _host_merge(host_kernels, tile, 5000, 0, hv, hi)
    rv, ri = torch.full((5003, k), -float("inf")), torch.full((5003, k), -1, dtype=torch.int64)
    _kernel_contract(torch.from_numpy(tile), 5000, 0, rv, ri)
    np.testing.assert_array_equal(hi[5000:], ri[5000:].numpy())
    np.testing.assert_array_equal(hv[5000:], rv[5000:].numpy())


def test_topk_source_on_the_host_rescores_screened_tiles(host_kernels):
    rng = np.random.default_rng(0)
    n, d, k = 300, 24, 7
    x = rng.normal(size=(n, d)).astype(np.float32)
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    exact = x @ x.T
    screened = (exact + rng.uniform(-0.01, 0.01, size=exact.shape)).astype(np.float32)  # error <= margin
    hv, hi = np.full((n, k), -np.inf, np.float32), np.full((n, k), -1, np.int64)
    _host_merge(host_kernels, exact[:100, :100], 0, 0, hv, hi)
    _host_merge(host_kernels, screened[:100, 100:], 0, 100, hv, hi, margin=0.01, xr=x[:100], xc=x[100:])
    rv, ri = torch.full((n, k), -float("inf")), torch.full((n, k), -1, dtype=torch.int64)
    _kernel_contract(torch.from_numpy(exact[:100, :300]), 0, 0, rv, ri)
    np.testing.assert_array_equal(hi[:100], ri[:100].numpy())
    np.testing.assert_allclose(hv[:100], rv[:100].numpy(), atol=1e-6)


def test_edge_partners_on_the_host_skip_empty_slots(host_kernels):
    # lists with -1 slots (fewer than k neighbours): no reverse edge, weight 0, and no read
    # before the start of the lists (AddressSanitizer in the sanitised build would say)
    x, _ = clustered(n=120, d=4, classes=3, seed=2)
    full = gg.knn_graph(x, k=5)
    idx = full.indices.numpy().copy()
    idx[np.random.default_rng(0).random(idx.shape) < 0.3] = -1
    g = gg.KnnGraph(torch.from_numpy(idx), full.weights)
    w = g.weights.numpy().copy()
    recip = np.zeros(idx.shape, np.uint8)
    pw = np.zeros(idx.shape, np.float32)
    host_kernels.host_edge_partners_f32(
        _ptr(idx), _ptr(w), ctypes.c_longlong(g.n), ctypes.c_int(g.k), _ptr(recip), _ptr(pw)
    )
    ref_recip, ref_pw = g.reciprocity()
    np.testing.assert_array_equal(recip.astype(bool), ref_recip.numpy())
    np.testing.assert_array_equal(pw, ref_pw.numpy())
    assert not recip[idx < 0].any()


def test_graph_sources_on_the_host_count_like_the_cpu_path(host_kernels):
    x, labels = clustered(n=300, d=5, classes=3, seed=11)
    g = gg.knn_graph(x, k=6)
    idx = g.indices.numpy().copy()
    w = g.weights.numpy().copy()
    recip = np.zeros(idx.shape, np.uint8)
    pw = np.zeros(idx.shape, np.float32)
    host_kernels.host_edge_partners_f32(
        _ptr(idx), _ptr(w), ctypes.c_longlong(g.n), ctypes.c_int(g.k), _ptr(recip), _ptr(pw)
    )
    ref_recip, ref_pw = g.reciprocity()
    np.testing.assert_array_equal(recip.astype(bool), ref_recip.numpy())
    np.testing.assert_array_equal(pw, ref_pw.numpy())

    indptr, cols = (t.numpy().copy() for t in oriented_csr(edge_rows(g, "max")))
    src = np.repeat(np.arange(g.n), np.diff(indptr))
    codes = np.unique(labels, return_inverse=True)[1].astype(np.int64)
    total, nodes, motifs = np.zeros(1, np.uint64), np.zeros(g.n, np.uint64), np.zeros(3, np.uint64)
    host_kernels.host_triangle_count(
        _ptr(indptr),
        _ptr(cols),
        _ptr(src),
        ctypes.c_longlong(len(cols)),
        _ptr(codes),
        _ptr(total),
        _ptr(nodes),
        _ptr(motifs),
        1,
        1,
    )
    assert int(total[0]) == gg.triangles(g)
    np.testing.assert_array_equal(nodes.astype(np.int64), gg.triangles(g, per_node=True).numpy())
    assert dict(zip(["same", "pair", "distinct"], motifs.tolist(), strict=True)) == gg.motifs(g, labels)


def test_to_cugraph_without_rapids_names_what_to_install():
    pytest.importorskip("torch")
    if importlib.util.find_spec("cugraph") is not None:
        pytest.skip("cuGraph is installed")
    g = gg.knn_graph(torch.randn(10, 3), k=2)
    with pytest.raises(gg.GpuGraphError, match="pip install cugraph-cu12 cudf-cu12"):
        g.to_cugraph()


def test_to_cugraph_wants_a_cuda_graph(monkeypatch):
    monkeypatch.setitem(sys.modules, "cudf", type(sys)("cudf"))
    monkeypatch.setitem(sys.modules, "cugraph", type(sys)("cugraph"))
    g = gg.knn_graph(torch.randn(10, 3), k=2)
    with pytest.raises(ValueError, match=r"needs a graph on a CUDA device, this one is on cpu; call .to\('cuda'\)"):
        g.to_cugraph()


# ---- on a GPU ----------------------------------------------------------------------------


def _same_neighbours(a: gg.KnnGraph, b: gg.KnnGraph, atol: float = 2e-6) -> None:
    """Equal lists, except where two neighbours tie within atol (a few float32 ulps): the
    order of tied entries, or which of several tied k-th entries is kept, may differ."""
    ia, ib = a.indices.cpu(), b.indices.cpu()
    wa, wb = a.weights.cpu(), b.weights.cpu()
    torch.testing.assert_close(wa, wb, atol=atol, rtol=0)
    differ = (ia != ib).any(dim=1)
    for r in differ.nonzero().flatten().tolist():  # only the order of near-ties may differ
        kth = float(wa[r, -1])
        sa = set(ia[r][wa[r] > kth + atol].tolist())
        assert sa == set(ib[r][wb[r] > kth + atol].tolist())


@cuda
@pytest.mark.parametrize("n,k,tile", [(500, 1, 128), (3000, 10, 700), (5000, 64, 1024), (2000, 256, 600)])
@pytest.mark.parametrize("precision", ["exact", "tf32", "bf16"])
def test_cuda_knn_equals_the_cpu_path(n, k, tile, precision):
    x, _ = clustered(n=n, d=48, classes=8, seed=n)
    cpu = gg.knn_graph(x, k=k, tile=tile)
    gpu = gg.knn_graph(x.cuda(), k=k, tile=tile, precision=precision)
    assert gpu.device.type == "cuda"
    _same_neighbours(cpu, gpu)


@cuda
def test_cuda_knn_float64_and_large_k_take_the_torch_path():
    x, _ = clustered(n=800, d=12, seed=3)
    _same_neighbours(gg.knn_graph(x.double(), k=5), gg.knn_graph(x.double().cuda(), k=5))
    _same_neighbours(gg.knn_graph(x, k=300), gg.knn_graph(x.cuda(), k=300))


@cuda
def test_exact_ignores_a_global_tf32_setting():
    x, _ = clustered(n=2000, d=256, seed=4)
    saved = torch.backends.cuda.matmul.allow_tf32
    torch.backends.cuda.matmul.allow_tf32 = True
    try:
        for k in (10, 300):  # the kernel path and the torch path
            gpu = gg.knn_graph(x.cuda(), k=k, tile=500)
            _same_neighbours(gg.knn_graph(x, k=k, tile=500), gpu, atol=1e-6)
    finally:
        torch.backends.cuda.matmul.allow_tf32 = saved
    assert torch.backends.cuda.matmul.allow_tf32 == saved


@cuda
def test_selection_kernel_reads_a_transposed_tile_like_a_copy():
    x = torch.nn.functional.normalize(torch.randn(600, 32, device="cuda"), dim=1)
    s = x[:200] @ x[200:].T  # (200, 400)
    states = []
    for transpose in (True, False):
        v = torch.full((600, 9), -float("inf"), device="cuda")
        i = torch.full((600, 9), -1, dtype=torch.int64, device="cuda")
        _kernels.topk_merge(s if transpose else s.T.contiguous(), 200, 0, v, i, transpose=transpose)
        states.append((v, i))
    assert torch.equal(states[0][0], states[1][0]) and torch.equal(states[0][1], states[1][1])
    ref = torch.topk(s.T, 9, dim=1)
    torch.testing.assert_close(states[0][0][200:], ref.values)


@cuda
def test_kernel_wrappers_check_cuda_inputs():
    v = torch.zeros(4, 2, device="cuda")
    i = torch.zeros(4, 2, dtype=torch.int64, device="cuda")
    with pytest.raises(TypeError, match=re.escape("tile must be torch.float32, got torch.float64")):
        _kernels.topk_merge(torch.zeros(2, 2, dtype=torch.float64, device="cuda"), 0, 0, v, i)
    with pytest.raises(ValueError, match=re.escape("tile must be contiguous; call .contiguous")):
        _kernels.topk_merge(torch.zeros(2, 4, device="cuda")[:, ::2], 0, 0, v, i)
    if torch.cuda.device_count() > 1:
        with pytest.raises(ValueError, match="tile is on cuda:1 but the other inputs are on cuda:0"):
            _kernels.topk_merge(torch.zeros(2, 2, device="cuda:1"), 0, 0, v, i)


@cuda
def test_cuda_knn_streams_x_from_host_memory():
    x, _ = clustered(n=3000, d=32, seed=8)
    xn = torch.nn.functional.normalize(x, dim=1)
    streamed = search(
        RowBlocks(xn.pin_memory(), torch.device("cuda", 0), streamed=True), 10, 700, "exact", CudaSelector()
    )
    resident = gg.knn_graph(x.cuda(), k=10, tile=700)
    assert torch.equal(streamed[0], resident.indices)
    host = gg.knn_graph(x, k=10, device="cuda")  # fits: copied, same answer
    assert host.device.type == "cuda" and torch.equal(host.indices, resident.indices)


@cuda
def test_cuda_partners_triangles_and_modularity_equal_the_cpu():
    x, labels = clustered(n=4000, d=16, classes=6, seed=2)
    cpu = gg.knn_graph(x, k=10)
    gpu = cpu.to("cuda")
    for c, g in zip(cpu.reciprocity(), gpu.reciprocity(), strict=True):
        assert torch.equal(c, g.cpu())
    assert gg.triangles(gpu) == gg.triangles(cpu)
    assert torch.equal(gg.triangles(gpu, per_node=True).cpu(), gg.triangles(cpu, per_node=True))
    assert gg.motifs(gpu, labels) == gg.motifs(cpu, labels)
    for mode in ("mean", "max", "mutual"):
        assert gg.modularity(gpu, labels, mode=mode) == pytest.approx(gg.modularity(cpu, labels, mode=mode), abs=1e-9)


@cuda
def test_the_torch_selection_on_cuda_says_so():
    x, _ = clustered(n=700, d=12, seed=6)
    with pytest.warns(UserWarning, match=r"with k=300 > 256 the slower torch selection runs"):
        gg.knn_graph(x.cuda(), k=300)
    with pytest.warns(UserWarning, match=r"torch.float64 rows .* precision='tf32' has no screen there"):
        g = gg.knn_graph(x.double().cuda(), k=5, precision="tf32")
    _same_neighbours(gg.knn_graph(x.double(), k=5), g)


@cuda
def test_bf16_screen_is_exact_when_cublas_may_reduce_in_bf16():
    # Long dot products invite split-K; the screen's bound assumes float32 reductions.
    x, _ = clustered(n=3000, d=4096, classes=10, seed=12)
    matmul = torch.backends.cuda.matmul
    saved = matmul.allow_bf16_reduced_precision_reduction
    matmul.allow_bf16_reduced_precision_reduction = True
    try:
        screened = gg.knn_graph(x.cuda(), k=10, tile=1000, precision="bf16")
    finally:
        matmul.allow_bf16_reduced_precision_reduction = saved
    assert matmul.allow_bf16_reduced_precision_reduction == saved
    _same_neighbours(gg.knn_graph(x, k=10, tile=1000), screened)


@cuda
def test_similarity_grids_take_layers_from_several_devices():
    x, _ = clustered(n=300, d=16, seed=7)
    acts = {"cpu": x, "cuda": torch.relu(x).cuda(), "cuda2": (x @ torch.randn(16, 8)).cuda()}
    for measure, k in (("lsim", None), ("lsim", 5), ("cka", None), ("knn_overlap", 5)):
        mixed = gg.similarity_matrix(acts, measure=measure, k=k).values
        host = gg.similarity_matrix({n: a.cpu() for n, a in acts.items()}, measure=measure, k=k).values
        np.testing.assert_allclose(mixed, host, atol=1e-9)
