"""Floor 2, graphs and their measures: :class:`~gpugraph.Graph` (any graph in CSR form,
undirected or directed, its constructors and converters), :class:`~gpugraph.KnnGraph` (the
kNN lists, -1 for an empty slot, their reciprocity, symmetrised views, converters, save and
load), ``edges.py`` (the one view of either that every measure reads, and labels given per
node or as a partition), modularity against labels (directed too) and its permutation null,
triangle and labelled-motif counts, transitivity and clustering.

The public functions here are doors: they check a graph and its labels once and hand the
kernels arrays they trust. Imports ``gpugraph.kernels`` and ``gpugraph._util``.
"""
