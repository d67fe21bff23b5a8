"""Floor 3, building exact cosine kNN graphs without the N x N matrix.

- ``rows.py``: rows checked (finite, nonzero) and brought to unit length: the door.
- ``sources.py``: where rows come from (tensors, .npy files, memmaps, zarr), read by block.
- ``tiles.py``: the one tile scheduler and its selectors (torch, compiled CPU, CUDA).
- ``precision.py``: the arithmetic of a tile's GEMM (IEEE float32, bf16, TF32).
- ``checkpoint.py``: a search's running lists saved and read back, so that an
  interrupted search resumes with the same result.
- ``build.py``: :func:`~gpugraph.knn_graph`, its checks, and the device, memory and
  selector policy.

Imports ``gpugraph.graph`` (the result is a KnnGraph), ``gpugraph.kernels`` and
``gpugraph._util``.
"""
