"""Floor 1, the hot loops, in pairs: the CUDA source and the compiled CPU pass of the same
algorithm side by side.

- ``topk.cu`` / ``topk_cpu.py``: merge a similarity tile into running top-k lists, with the
  canonical re-scoring of candidates (numba on the CPU).
- ``graph.cu`` / ``graph_cpu.py``: reciprocity, modularity sums, triangle and motif counts
  over kNN lists.
- ``rows_cpu.py``: one pass over rows (largest entry, unit rows).
- ``cuda.py``: compiles the ``.cu`` sources with CuPy and launches them on torch's stream.
- ``threads.py``: how many threads a compiled pass runs on.

Works on arrays and tensors that the floors above have already checked; imports only
``gpugraph._util``.
"""
