"""The measures over torch.distributed ranks, for samples that do not fit one process.

Each rank holds a contiguous block of rows of the same (N, D) matrix (any sizes, a rank may
hold none); global row ids follow rank order. Start the ranks with torchrun and initialise
the default process group (gloo on CPU tensors, NCCL on CUDA tensors, one GPU per rank):

    torchrun --nproc-per-node=4 my_script.py

    import torch.distributed as dist, gpugraph.distributed as gd
    dist.init_process_group("gloo")
    g = gd.knn_graph(x_local, k=10)            # local rows, global neighbour ids
    q = gd.modularity(g, labels_local)         # the same float on every rank

Before any heavy collective, every function gathers a little metadata from all ranks (row
counts, widths, dtypes, bad rows, label counts) and checks it, so bad input on one rank
raises the same clear error on every rank, naming the rank, instead of hanging the others.

Work and communication of :func:`knn_graph` (a half ring): S = floor(P / 2) steps. At step s
every rank holds the block of rank r - s with the running top-k of its rows, computes the
pair (own block, visiting block) once, feeding both blocks' lists, and passes both on to
rank r + 1; at the end the visiting lists go home in one hop. The blocks travel in chunks of
at most a tile of rows (chunk j of every block goes round, then its lists go home, then
chunk j + 1), so a rank holds two chunks and its own rows, and an out-of-core shard is read
a tile at a time, never whole. Each unordered pair of blocks is computed once (for an even P
the two ranks that meet a pair at step P / 2 take half each), so the ranks share the
N^2 / 2 work of the one-process search. With blocks of N / P rows,
each rank sends S * N / P * D * 4 bytes of rows (float32) and S * N / P * k * 12 bytes of
lists (value and int64 index), plus O(P) metadata: about half the rows of a full ring.
The graph measures all-gather the (N, k) lists once (N * k * 12 bytes to every rank) and
reduce per-class sums or counts.
"""

from __future__ import annotations

import contextlib
from collections.abc import Mapping
from typing import TYPE_CHECKING

import numpy as np
import torch
import torch.distributed as dist

from gpugraph._util import memory as _memory
from gpugraph._util import progress as _progress
from gpugraph._util.convert import label_codes
from gpugraph._util.memory import parse_memory
from gpugraph._util.types import Labels, Memory, Progress, RowSource
from gpugraph.graph.knngraph import (
    KnnGraph,
    check_graph,
    check_mode,
    reciprocity_of,
    symmetric_from,
)
from gpugraph.graph.motifs import _count
from gpugraph.knn.build import (
    _check_precision,
    _check_tile,
    _default_tile,
    _selector,
    as_float32_lists,
    check_k,
)
from gpugraph.knn.rows import unit_rows
from gpugraph.knn.sources import Source, as_source
from gpugraph.knn.tiles import RowBlocks, TopK, tiles, walk

if TYPE_CHECKING:
    from gpugraph.studies.curves import LayerCurve


__all__ = ["knn_graph", "layer_similarity", "modularity", "modularity_curve", "motifs", "shard", "triangles"]


def _world(group) -> tuple[int, int]:
    if not dist.is_available() or not dist.is_initialized():
        raise RuntimeError(
            "gpugraph.distributed needs an initialised process group: start the ranks with torchrun "
            "and call torch.distributed.init_process_group('gloo') (CPU) or ('nccl') (GPU) first"
        )
    return dist.get_rank(group), dist.get_world_size(group)


def _gather(info: dict, group) -> list[dict]:
    """Every rank's small metadata dict, in rank order (one all_gather_object)."""
    _, world = _world(group)
    out: list = [None] * world
    dist.all_gather_object(out, info, group=group)
    return out


def _raise_if_any(infos: list[dict]) -> None:
    """The same error on every rank when any rank reported one."""
    for rank, info in enumerate(infos):
        if info.get("error"):
            kind = TypeError if info.get("kind") == "TypeError" else ValueError
            raise kind(f"rank {rank}: {info['error']}")


def _local_error(fn) -> dict:
    try:
        fn()
    except (TypeError, ValueError) as exc:
        return {"error": str(exc), "kind": type(exc).__name__}
    return {}


def _agree(group, check) -> None:
    """Run a collective call's local argument checks on every rank, then raise the first
    rank's error on all of them (so no rank goes on to a collective the others left)."""
    _raise_if_any(_gather(_local_error(check), group))


def _same(infos: list[dict], key: str, what: str) -> None:
    values = [info[key] for info in infos if info.get("n", 1)]
    for rank, info in enumerate(infos):
        if info.get("n", 1) and info[key] != values[0]:
            raise ValueError(
                f"every rank must hold rows of one {what}: rank {rank} has {info[key]}, another {values[0]}"
            )


def knn_graph(
    x_local: RowSource,
    k: int = 10,
    group: dist.ProcessGroup | None = None,
    *,
    precision: str = "exact",
    tile: int | None = None,
    memory: Memory = None,
    progress: Progress = None,
) -> KnnGraph:
    """Exact cosine k-NN graph of the rows of all ranks; this rank's rows, global indices.

    Equal to ``gpugraph.knn_graph`` on the concatenation of every rank's rows (the same
    neighbour sets, ties broken towards the lower global index), for any world size and
    any split, and for every ``precision`` (as in ``gpugraph.knn_graph``: a low-precision
    screen, then every kept pair re-scored by the one canonical cosine, so the graph is the
    same bit for bit). ``x_local`` is this rank's (n_r, D) block (n_r may be 0; its width and
    dtype are then taken from the other ranks), a tensor or an out-of-core source.
    ``memory`` and ``tile`` size the tiles as in ``gpugraph.knn_graph``; ``progress`` as
    there, over this rank's tiles.

    Each pair of row blocks is computed once (see the module notes): the blocks travel half
    way round a ring with the running top-k of their rows, then the lists go home.

    Examples
    --------
    >>> import tempfile, torch, torch.distributed as dist
    >>> import gpugraph as gg, gpugraph.distributed as gd
    >>> dist.init_process_group("gloo", init_method="file://" + tempfile.mktemp(), rank=0, world_size=1)
    >>> x = torch.randn(100, 8, generator=torch.Generator().manual_seed(0))
    >>> g = gd.knn_graph(x[gd.shard(len(x))], k=5)      # under torchrun: this rank's rows
    >>> bool((g.indices == gg.knn_graph(x, k=5).indices).all())
    True
    >>> dist.destroy_process_group()
    """
    rank, world = _world(group)
    name = f"x on rank {rank}"
    local = _Local(x_local, name, memory)

    def check_options() -> None:
        _check_precision(precision, local.device)
        _check_tile(tile)

    local.info.update(_local_error(check_options))
    infos = _gather(local.info, group)
    _raise_if_any(infos)
    _same(infos, "d", "width D")
    _same(infos, "device", "device type")
    _same(infos, "dtype", "dtype")
    local.adopt(infos)
    sizes = [i["n"] for i in infos]
    n_total = sum(sizes)
    check_k(k, n_total)
    offsets = np.concatenate([[0], np.cumsum(sizes)]).tolist()
    d, device, dtype = local.d, local.device, local.unit_dtype
    budget = parse_memory(memory)
    tile = tile or _default_tile(device, dtype, k, budget, d=d)
    # the blocks travel in chunks of at most a tile of rows (and an eighth of the budget),
    # each with its rows' running top-k: a rank holds two chunks at a time, never a whole
    # block (its own out-of-core rows are read a tile at a time too)
    size = torch.empty((), dtype=dtype).element_size()
    chunk = max(1, min(tile, (budget or _memory.budget(device)) // (8 * (d * size + k * 16))))
    schedule = list(_schedule(rank, world, sizes, chunk))
    count = len(tiles(local.n, None, tile, k)) + sum(
        len(tiles(mine.stop - mine.start, vis.stop - vis.start, tile, k)) for _, _, _, mine, vis in schedule
    )
    bar = _progress.bar(progress, count, "tile", "knn_graph", long=n_total >= 20_000)
    selector, precision_used = _selector(device, dtype, k, precision)
    # every kept pair is re-scored by the canonical cosine (the same bits on whichever rank
    # it is met, so ties across ranks go to the lower global index)
    walk_args = {"tile": tile, "precision": precision_used, "bar": bar}
    own = TopK(local.n, k, dtype, device)
    mine_rows = local.row_blocks()
    walk(selector, own, mine_rows, offsets[rank], **walk_args)
    hops = world // 2
    sent = 0
    held = visitor = None  # the chunk this rank holds and its rows' running top-k
    for j, step, owner, own_part, vis_part in schedule:
        j0, j1 = _chunk_rows(j, chunk, local.n)
        if step == 1:  # a chunk of this rank's own rows sets out; its lists stay at home
            held, visitor = local.rows(j0, j1), None
        # pass the chunk held (and, after the first step, its rows' top-k) on to rank + 1
        c0, c1 = _chunk_rows(j, chunk, sizes[owner])
        outgoing = [held] + ([visitor.values, visitor.indices] if visitor is not None else [])
        held = torch.empty((c1 - c0, d), dtype=dtype, device=device)
        arriving = TopK(c1 - c0, k, dtype, device)
        incoming = [held] + ([arriving.values, arriving.indices] if step > 1 else [])
        sent += _exchange(outgoing, (rank + 1) % world, incoming, (rank - 1) % world, group)
        visitor = arriving
        if vis_part.stop > vis_part.start and own_part.stop > own_part.start:
            walk(
                selector,
                own,
                mine_rows.view(own_part.start, own_part.stop),
                offsets[rank] + own_part.start,
                a_at=own_part.start,
                top_b=visitor,
                rows_b=RowBlocks(held).view(vis_part.start - c0, vis_part.stop - c0),
                b_id=offsets[owner] + vis_part.start,
                b_at=vis_part.start - c0,
                **walk_args,
            )
        if step == hops:  # the visitors' lists go home, to rank - S; this chunk's come from rank + S
            back = TopK(j1 - j0, k, dtype, device)
            sent += _exchange(
                [visitor.values, visitor.indices],
                (rank - hops) % world,
                [back.values, back.indices],
                (rank + hops) % world,
                group,
            )
            own.merge(back, at=j0)
    own.sort()
    bar.close()
    meta = {
        "metric": "cosine",
        "n": n_total,
        "d": d,
        "k": k,
        "dtype": str(local.dtype).replace("torch.", ""),
        "precision": precision,
        "world_size": world,
        "rank": rank,
        "offset": offsets[rank],
        "bytes_sent": sent,
    }
    indices, weights = as_float32_lists(own.values, own.indices)
    return KnnGraph(indices, weights, validate=False, meta=meta)


def _steps(rank: int, world: int, sizes: list[int]) -> list[tuple[int, int, slice, slice]]:
    """(step, owner of the visiting block, own rows, visiting rows) for each step of the half ring.

    At step s (0 <= s <= P // 2) this rank holds the block of rank r - s and computes the
    pair (own rows, its rows): each unordered pair of blocks once. For an even P the last
    step meets each pair from both sides, so the two ranks split it: the lower rank takes
    the visitor's first half, the higher rank its own second half.
    """
    out = []
    for step in range(world // 2 + 1):
        owner = (rank - step) % world
        mine, theirs = slice(0, sizes[rank]), slice(0, sizes[owner])
        if step and 2 * step == world:
            if rank < owner:
                theirs = slice(0, sizes[owner] // 2)
            else:
                mine = slice(sizes[rank] // 2, sizes[rank])
        out.append((step, owner, mine, theirs))
    return out


def _chunk_rows(j: int, chunk: int, n: int) -> tuple[int, int]:
    """Rows of chunk j of a block of n rows (empty past its end)."""
    return min(j * chunk, n), min((j + 1) * chunk, n)


def _schedule(rank: int, world: int, sizes: list[int], chunk: int):
    """(chunk j, step, owner, own rows, visiting rows) of the chunked half ring, in order.

    For each chunk j (every rank counts the same chunks: those of the largest block), the
    chunk of each rank's block travels S = P // 2 steps: at step s this rank holds chunk j of
    rank r - s's block and computes (its own rows, those rows); ``visiting rows`` are rows
    of the owner's block (the chunk, or the part of it :func:`_steps` gives this rank for an
    even P's last step)."""
    chunks = -(-max(sizes) // chunk)
    steps = _steps(rank, world, sizes)[1:]
    for j in range(chunks):
        for step, owner, mine, theirs in steps:
            c0, c1 = _chunk_rows(j, chunk, sizes[owner])
            yield j, step, owner, mine, slice(max(c0, theirs.start), max(min(c1, theirs.stop), max(c0, theirs.start)))


def _exchange(outgoing: list, to: int, incoming: list, source: int, group) -> int:
    """Send ``outgoing`` to rank ``to`` while receiving ``incoming`` from ``source`` (empty
    tensors are skipped on both sides); the bytes sent."""
    ops = [dist.P2POp(dist.isend, t.contiguous(), to, group) for t in outgoing if t.numel()]
    ops += [dist.P2POp(dist.irecv, t, source, group) for t in incoming if t.numel()]
    for req in dist.batch_isend_irecv(ops) if ops else []:
        req.wait()
    return sum(t.numel() * t.element_size() for t in outgoing)


class _Local:
    """This rank's rows, or the error they gave, gathered before any collective.

    In memory: checked and made unit at once. Out of core: checked a block at a time here,
    and read (and made unit) a block at a time by the search, never whole. A rank may hold
    no rows: an (0, D) tensor or array is accepted here (and only here)."""

    def __init__(self, x, name: str, memory=None):
        # what an unreadable shard reports too (its error is raised on every rank first)
        self.n, self.d, self.device = 0, 0, torch.device("cpu")
        self.dtype: torch.dtype = torch.float32
        self.unit_dtype: torch.dtype = torch.float32
        self.unit: torch.Tensor = torch.empty(0, 0)
        self.src: Source | None = None
        error = _local_error(lambda: self._read(x, name, memory))
        self.info = {
            "n": self.n,
            "d": self.d,
            "dtype": str(self.dtype),
            "device": self.device.type,
            "unit": str(self.unit_dtype),
            **error,
        }

    def adopt(self, infos: list[dict]) -> None:
        """An empty rank takes the width and compute dtype of the ranks that hold rows
        (whatever its own (0, D) tensor said), so that its buffers match theirs."""
        holder = next((info for info in infos if info["n"]), None)
        if self.n or holder is None:
            return
        self.d = holder["d"]
        self.unit_dtype = getattr(torch, holder["unit"].removeprefix("torch."))
        self.unit = torch.empty((0, self.d), dtype=self.unit_dtype, device=self.device)

    def _read(self, x, name: str, memory) -> None:
        """``memory``: the budget an out-of-core shard is checked within."""
        if isinstance(x, (torch.Tensor, np.ndarray)) and x.ndim == 2 and len(x) == 0:
            t = torch.as_tensor(x)
            if not t.is_floating_point():
                raise TypeError(f"{name} must be floating point, got dtype {t.dtype}")
            self.d, self.dtype, self.device = t.shape[1], t.dtype, t.device
            self.unit_dtype = torch.float64 if t.dtype == torch.float64 else torch.float32
            self.unit = torch.empty((0, self.d), dtype=self.unit_dtype, device=t.device)
            return
        budget = parse_memory(memory)
        src = as_source(x, name)
        self.n, self.d, self.dtype, self.device = src.n, src.d, src.dtype, src.device
        self.unit_dtype = torch.float64 if src.dtype == torch.float64 else torch.float32
        if src.tensor is not None:
            self.unit = unit_rows(src.tensor, name).to(src.device)
        else:
            # bad rows named now, on every rank, before any exchange; blocks of 1/8 of the budget
            step = (budget or _memory.budget(self.device)) // (8 * 8 * max(1, self.d))
            src.check(nonzero=True, step=max(1, step))
            self.src = src

    def row_blocks(self) -> RowBlocks:
        return RowBlocks(self.unit) if self.src is None else RowBlocks(self.src, self.device, streamed=True)

    def rows(self, r0: int, r1: int) -> torch.Tensor:
        """Unit rows r0..r1 (read from disk and made unit when out of core)."""
        if self.src is None:
            return self.unit[r0:r1]
        return unit_rows(self.src.rows(r0, r1), self.src.name, offset=r0).to(self.device)


def _global_graph(g: KnnGraph, group) -> tuple[torch.Tensor, torch.Tensor, list[int], int]:
    """All ranks' (n_r, k) lists stacked in rank order: (N, k) indices and weights, the
    offsets, and this rank's first global row."""
    rank, world = _world(group)
    infos = _gather({"n": g.n, "k": g.k, "dtype": str(g.weights.dtype)}, group)
    _same(infos, "k", "k")
    sizes = [i["n"] for i in infos]
    width, rows = g.k, max(sizes)
    pad_i = torch.full((rows, width), -1, dtype=torch.int64, device=g.device)
    pad_w = torch.zeros((rows, width), dtype=torch.float64, device=g.device)
    pad_i[: g.n] = g.indices
    pad_w[: g.n] = g.weights.to(torch.float64)
    all_i = [torch.empty_like(pad_i) for _ in range(world)]
    all_w = [torch.empty_like(pad_w) for _ in range(world)]
    dist.all_gather(all_i, pad_i, group=group)
    dist.all_gather(all_w, pad_w, group=group)
    indices = torch.cat([t[:s] for t, s in zip(all_i, sizes, strict=True)])
    weights = torch.cat([t[:s] for t, s in zip(all_w, sizes, strict=True)])
    offsets = np.concatenate([[0], np.cumsum(sizes)]).tolist()
    return indices, weights, offsets, offsets[rank]


def _global_codes(labels_local, n_local: int, n_total: int, device, group) -> tuple[torch.Tensor, int]:
    """Class codes of every node (N,), consistent across ranks, and the number of classes.

    Each rank maps its labels to local codes; the distinct labels are gathered (small), their
    union ordered once, and the codes of all ranks all-gathered.
    """
    _, world = _world(group)
    err = {}
    classes: list = []
    codes = None
    try:
        if n_local or len(labels_local):
            codes, classes = label_codes(labels_local, n_local, device)
    except (TypeError, ValueError) as exc:
        err = {"error": str(exc), "kind": type(exc).__name__}
    infos = _gather({"n": n_local, "classes": classes, **err}, group)
    _raise_if_any(infos)
    union = []
    seen = set()
    for info in infos:
        for c in info["classes"]:
            if c not in seen:
                seen.add(c)
                union.append(c)
    with contextlib.suppress(TypeError):
        union = sorted(union)
    position = {c: i for i, c in enumerate(union)}
    remap = torch.tensor([position[c] for c in classes] or [0], dtype=torch.int64, device=device)
    local = remap[codes] if codes is not None and len(codes) else torch.empty(0, dtype=torch.int64, device=device)
    sizes = [i["n"] for i in infos]
    pad = torch.full((max(sizes),), -1, dtype=torch.int64, device=device)
    pad[:n_local] = local
    parts = [torch.empty_like(pad) for _ in range(world)]
    dist.all_gather(parts, pad, group=group)
    return torch.cat([p[:s] for p, s in zip(parts, sizes, strict=True)]), len(union)


def _all_sum(t: torch.Tensor, group) -> torch.Tensor:
    dist.all_reduce(t, op=dist.ReduceOp.SUM, group=group)
    return t


def modularity(
    g_local: KnnGraph,
    labels_local: Labels,
    group: dist.ProcessGroup | None = None,
    mode: str = "mean",
    weighted: bool = True,
    resolution: float = 1.0,
) -> float:
    """Modularity of the whole graph under the labels of all ranks; the same float on
    every rank, equal to ``gpugraph.modularity`` on the whole graph (to rounding, 1e-9).

    Each rank finds the reciprocity of its own edges against the gathered lists, sums the
    adjacency mass they carry into per-class strengths and the within-class total, in
    float64; two all-reduces combine them.

    Examples
    --------
    >>> import tempfile, torch, torch.distributed as dist
    >>> import gpugraph as gg, gpugraph.distributed as gd
    >>> dist.init_process_group("gloo", init_method="file://" + tempfile.mktemp(), rank=0, world_size=1)
    >>> x = torch.randn(100, 8, generator=torch.Generator().manual_seed(0))
    >>> y = torch.arange(100) % 3
    >>> q = gd.modularity(gd.knn_graph(x, k=5), y)       # the same float on every rank
    >>> abs(q - gg.modularity(gg.knn_graph(x, k=5), y)) < 1e-12
    True
    >>> dist.destroy_process_group()
    """
    _world(group)

    def check() -> None:
        check_graph(g_local, "g_local")
        check_mode(mode)

    _agree(group, check)
    indices, weights, _, first = _global_graph(g_local, group)
    n_total = len(indices)
    codes, classes = _global_codes(labels_local, g_local.n, n_total, g_local.device, group)
    local = slice(first, first + g_local.n)
    # reciprocity of this rank's edges only (O(n_r k^2)), against the gathered lists
    recip, partner_w = reciprocity_of(indices, weights, local)
    fwd, rev = symmetric_from(weights[local], recip, partner_w, mode, weighted, torch.float64)  # (n_r, k)
    strength = torch.zeros(n_total, dtype=torch.float64, device=g_local.device)
    strength[local] += fwd.sum(dim=1)
    strength.index_add_(0, indices[local].flatten(), rev.flatten())
    class_strength = torch.zeros(classes, dtype=torch.float64, device=g_local.device)
    class_strength.index_add_(0, codes, strength)
    same = codes[local][:, None] == codes[indices[local]]
    sums = torch.stack([(fwd + rev).sum(), ((fwd + rev) * same).sum()])
    _all_sum(class_strength, group)
    two_m, within = _all_sum(sums, group).tolist()
    if not two_m > 0.0:
        raise ValueError(f"the {mode!r} graph has total weight 2m = {two_m:.3g}, so its modularity is undefined")
    return float(within / two_m - resolution * ((class_strength / two_m) ** 2).sum())


def _count_local(g_local: KnnGraph, group, labels_local=None, per_node: bool = False):
    from gpugraph.graph.edges import edge_rows
    from gpugraph.graph.motifs import oriented_csr

    indices, weights, _, first = _global_graph(g_local, group)
    whole = KnnGraph(indices, weights, validate=False)
    codes = None
    if labels_local is not None:
        codes, _ = _global_codes(labels_local, g_local.n, len(indices), g_local.device, group)
    indptr, cols = (t.cpu().numpy() for t in oriented_csr(edge_rows(whole, "max")))
    # each triangle is found once, at the oriented edge leaving its lowest-ranked node:
    # this rank counts the edges leaving its own rows
    total, nodes, motif = _count(
        indptr,
        cols,
        per_node=per_node,
        labels=codes.cpu().numpy() if codes is not None else None,
        rows=(first, first + g_local.n),
    )
    counts = torch.tensor([total, *(motif or [])], dtype=torch.int64)
    _all_sum(counts, group)
    if per_node:
        nodes = _all_sum(torch.from_numpy(nodes), group)[first : first + g_local.n]
    return counts.tolist(), nodes


def triangles(g_local: KnnGraph, group: dist.ProcessGroup | None = None, per_node: bool = False) -> int | torch.Tensor:
    """Triangles of the whole union graph (exact; the same int on every rank), or with
    ``per_node`` the counts of this rank's nodes.

    Examples
    --------
    >>> import tempfile, torch, torch.distributed as dist
    >>> import gpugraph as gg, gpugraph.distributed as gd
    >>> dist.init_process_group("gloo", init_method="file://" + tempfile.mktemp(), rank=0, world_size=1)
    >>> x = torch.randn(100, 8, generator=torch.Generator().manual_seed(0))
    >>> gd.triangles(gd.knn_graph(x, k=5)) == gg.triangles(gg.knn_graph(x, k=5))
    True
    >>> dist.destroy_process_group()
    """
    _world(group)
    _agree(group, lambda: check_graph(g_local, "g_local"))
    counts, nodes = _count_local(g_local, group, per_node=per_node)
    return nodes.to(g_local.device) if per_node else counts[0]


def motifs(g_local: KnnGraph, labels_local: Labels, group: dist.ProcessGroup | None = None) -> dict[str, int]:
    """Labelled triangles of the whole union graph (exact; the same dict on every rank).

    Examples
    --------
    >>> import tempfile, torch, torch.distributed as dist
    >>> import gpugraph as gg, gpugraph.distributed as gd
    >>> dist.init_process_group("gloo", init_method="file://" + tempfile.mktemp(), rank=0, world_size=1)
    >>> x = torch.randn(100, 8, generator=torch.Generator().manual_seed(0))
    >>> y = torch.arange(100) % 3
    >>> gd.motifs(gd.knn_graph(x, k=5), y) == gg.motifs(gg.knn_graph(x, k=5), y)
    True
    >>> dist.destroy_process_group()
    """
    _world(group)
    _agree(group, lambda: check_graph(g_local, "g_local"))
    counts, _ = _count_local(g_local, group, labels_local=labels_local)
    return dict(zip(("same", "pair", "distinct"), counts[1:], strict=True))


def layer_similarity(
    x1_local: RowSource, x2_local: RowSource, k: int | None = None, group: dist.ProcessGroup | None = None
) -> float:
    """GBS LSim of two representations of the same samples, rows split over the ranks.

    Dense (``k=None``): through the feature form, the D1 x D2, D1 x D1 and D2 x D2 Gram
    factors all-reduced once (their size, not N, is what travels). With ``k``: the kNN
    graphs of both, built across the ranks, then the mean row cosine of their "mean"
    adjacencies. The same float on every rank.

    Examples
    --------
    >>> import tempfile, torch, torch.distributed as dist
    >>> import gpugraph as gg, gpugraph.distributed as gd
    >>> dist.init_process_group("gloo", init_method="file://" + tempfile.mktemp(), rank=0, world_size=1)
    >>> x = torch.randn(100, 8, generator=torch.Generator().manual_seed(0))
    >>> z = torch.tanh(x @ torch.randn(8, 4, generator=torch.Generator().manual_seed(1)))
    >>> abs(gd.layer_similarity(x, z) - gg.layer_similarity(x, z)) < 1e-9
    True
    >>> dist.destroy_process_group()
    """
    from gpugraph.similarity.layers import _sparse_lsim, _SparseFactor

    rank, _ = _world(group)
    if k is not None:
        g1, g2 = knn_graph(x1_local, k, group), knn_graph(x2_local, k, group)
        whole = [KnnGraph(*_global_graph(g, group)[:2], validate=False) for g in (g1, g2)]
        return _sparse_lsim(_SparseFactor(whole[0]), _SparseFactor(whole[1]))
    l1, l2 = _Local(x1_local, f"x1 on rank {rank}"), _Local(x2_local, f"x2 on rank {rank}")
    error = next((info for info in (l1.info, l2.info) if info.get("error")), None)
    if error is None and l1.n != l2.n:
        error = {"error": f"x1 and x2 must hold the same samples: {l1.n} and {l2.n} rows"}
    infos = _gather(
        {
            "n": l1.n,
            "d1": l1.d,
            "d2": l2.d,
            "u1": l1.info["unit"],
            "u2": l2.info["unit"],
            **{key: error[key] for key in ("error", "kind") if error and key in error},
        },
        group,
    )
    _raise_if_any(infos)
    _same(infos, "d1", "width D1")
    _same(infos, "d2", "width D2")
    l1.adopt([{"n": i["n"], "d": i["d1"], "unit": i["u1"]} for i in infos])
    l2.adopt([{"n": i["n"], "d": i["d2"], "unit": i["u2"]} for i in infos])
    a, b = l1.rows(0, l1.n).double(), l2.rows(0, l2.n).to(l1.device).double()  # (n_r, D1), (n_r, D2)
    ab, aa, bb = (_all_sum(t.contiguous(), group) for t in (a.T @ b, a.T @ a, b.T @ b))
    # (n_r, 3): <A1[i], A2[i]>, |A1[i]|^2, |A2[i]|^2 over j != i: the full sums less the
    # diagonal term, and rows where that cancels summed again directly (as gpugraph.similarity.gram.rowdot_off)
    full = torch.stack([((a @ ab) * b).sum(dim=1), ((a @ aa) * a).sum(dim=1), ((b @ bb) * b).sum(dim=1)], dim=1)
    da, db = (a * a).sum(dim=1), (b * b).sum(dim=1)
    sums = full - torch.stack([da * db, da * da, db * db], dim=1)
    n_total, offset = sum(i["n"] for i in infos), sum(i["n"] for i in infos[:rank])
    # rounding bounds of the three sums; the norms are wanted to 2^-30 relative, the cross
    # term to 2^-30 of the norms' product it is divided by
    fa, fb = full[:, 1], full[:, 2]
    bound = (n_total + l1.d + l2.d + 4) * 2.0**-53 * torch.stack([torch.sqrt(fa * fb), fa, fb], dim=1)
    sq1, sq2 = sums[:, 1].clamp(min=0.0), sums[:, 2].clamp(min=0.0)
    against = torch.stack([torch.sqrt(sq1 * sq2), sq1, sq2], dim=1)
    flagged = torch.nonzero((2.0**30 * bound >= against).any(dim=1)).ravel()
    direct = _off_diagonal_sums(a, b, flagged, offset, group)
    if len(flagged):
        sums[flagged] = direct
    denom = torch.sqrt(sums[:, 1] * sums[:, 2])
    bad = int((~(denom > 0)).sum())
    total = _all_sum(
        torch.tensor(
            [float((sums[:, 0] / denom).sum()) if not bad else 0.0, float(bad), float(len(a))], dtype=torch.float64
        ),
        group,
    )
    if total[1] > 0:
        raise ValueError(
            "a node's adjacency row is zero in one graph (the sample is orthogonal to every other "
            "sample), so its cosine with the other graph's row is undefined"
        )
    return float(total[0] / total[2])


def _off_diagonal_sums(a: torch.Tensor, b: torch.Tensor, rows: torch.Tensor, offset: int, group) -> torch.Tensor:
    """For this rank's ``rows`` (local ids; any rank may list none): sum over the global
    j != i of (a_i . a_j)(b_i . b_j), (a_i . a_j)^2 and (b_i . b_j)^2, (len(rows), 3) float64.
    The listed rows of every rank are all-gathered (a few, where cancellation struck), each
    rank adds its own rows' terms, and one all-reduce sums them."""
    _, world = _world(group)
    counts: list[int] = [0] * world
    dist.all_gather_object(counts, len(rows), group=group)
    width = max(counts)
    if width == 0:
        return torch.empty((0, 3), dtype=torch.float64, device=a.device)
    pad = torch.zeros((width, a.shape[1] + b.shape[1] + 1), dtype=torch.float64, device=a.device)
    pad[: len(rows), : a.shape[1]] = a[rows]
    pad[: len(rows), a.shape[1] : -1] = b[rows]
    pad[: len(rows), -1] = (rows + offset).double()  # global ids, exact in float64
    parts = [torch.empty_like(pad) for _ in range(world)]
    dist.all_gather(parts, pad, group=group)
    picked = torch.cat([p[:c] for p, c in zip(parts, counts, strict=True)])  # (F, D1 + D2 + 1)
    pa, pb, ids = picked[:, : a.shape[1]], picked[:, a.shape[1] : -1], picked[:, -1].long()
    ka, kb = pa @ a.T, pb @ b.T  # (F, n_r)
    own = ids[:, None] == torch.arange(offset, offset + len(a), device=a.device)[None, :]
    ka, kb = ka.masked_fill(own, 0.0), kb.masked_fill(own, 0.0)  # j == i left out
    out = _all_sum(torch.stack([(ka * kb).sum(dim=1), (ka * ka).sum(dim=1), (kb * kb).sum(dim=1)], dim=1), group)
    start = sum(counts[: dist.get_rank(group)])
    return out[start : start + len(rows)]


def shard(n: int, group: dist.ProcessGroup | None = None) -> slice:
    """This rank's contiguous share of ``n`` samples, balanced over the ranks (sizes differ
    by at most one; no sample twice, unlike DistributedSampler's padding). Take the rows
    of your data set with it before ``capture``: ``x[gd.shard(len(x))]``.

    Examples
    --------
    >>> import tempfile, torch, torch.distributed as dist
    >>> import gpugraph as gg, gpugraph.distributed as gd
    >>> dist.init_process_group("gloo", init_method="file://" + tempfile.mktemp(), rank=0, world_size=1)
    >>> gd.shard(10)                     # one process holds every row; of 4 ranks, rank 1 gets slice(3, 6)
    slice(0, 10, None)
    >>> dist.destroy_process_group()
    """
    rank, world = _world(group)
    bounds = [round(i * n / world) for i in range(world + 1)]
    return slice(bounds[rank], bounds[rank + 1])


def modularity_curve(
    acts_local: Mapping[str, RowSource],
    labels_local: Labels | None = None,
    k: int = 3,
    n: int | None = 500,
    repeats: int = 5,
    seed: int = 0,
    mode: str = "mean",
    group: dist.ProcessGroup | None = None,
) -> LayerCurve:
    """``gpugraph.modularity_curve`` over rows split across the ranks: the same subsets are
    drawn on every rank from the global sample ids, each rank contributes the rows of each
    subset it holds, and every rank returns the same LayerCurve, equal to the
    single-process curve of the concatenated rows (to 1e-9).

    Examples
    --------
    >>> import tempfile, torch, torch.distributed as dist
    >>> import gpugraph as gg, gpugraph.distributed as gd
    >>> dist.init_process_group("gloo", init_method="file://" + tempfile.mktemp(), rank=0, world_size=1)
    >>> acts = {"a": torch.randn(120, 6), "b": torch.randn(120, 6)}
    >>> y = torch.arange(120) % 3
    >>> curve = gd.modularity_curve(acts, y, k=3, n=40, repeats=3)
    >>> curve.layers, curve.values.shape
    (['a', 'b'], (3, 2))
    >>> dist.destroy_process_group()
    """
    from gpugraph.studies.curves import LayerCurve, _labels_of, _layer_items, subsets

    rank, world = _world(group)
    items, n_local = [], 0

    def read():  # every layer's rows checked here, then the verdicts gathered before any exchange
        nonlocal items, n_local, labels_local
        items, n_local = _layer_items(acts_local, allow_empty=True)
        labels_local = _labels_of(acts_local, labels_local)

    error = _local_error(read)
    infos = _gather({"n": n_local, "layers": [name for name, _ in items], **error}, group)
    _raise_if_any(infos)
    if any(info["layers"] != infos[0]["layers"] for info in infos):
        raise ValueError(
            "every rank must capture the same layers: "
            + "; ".join(f"rank {r}: {info['layers']}" for r, info in enumerate(infos))
        )
    sizes = [info["n"] for info in infos]
    offsets = np.concatenate([[0], np.cumsum(sizes)]).tolist()
    r0, r1 = offsets[rank], offsets[rank + 1]
    parts = subsets(offsets[-1], n, repeats, seed)
    values = np.empty((len(parts), len(items)))
    labels = np.asarray(labels_local.cpu() if isinstance(labels_local, torch.Tensor) else labels_local)
    for j, (_, src) in enumerate(items):
        for i, idx in enumerate(parts):
            mine = idx[(idx >= r0) & (idx < r1)] - r0  # this rank's rows of the subset, in order
            x = src.take(mine) if len(mine) else torch.empty((0, src.d), dtype=src.dtype, device=src.device)
            g = knn_graph(x, k, group)
            values[i, j] = modularity(g, labels[mine], group, mode=mode)
    params = {
        "measure": "modularity",
        "k": k,
        "n": n,
        "repeats": len(parts),
        "seed": seed,
        "mode": mode,
        "negative": "keep",
        "final": list(getattr(acts_local, "final", [])),
        "world_size": world,
    }
    return LayerCurve([name for name, _ in items], values, params)
