"""Floor 2, graphs and their measures: :class:`~gpugraph.KnnGraph` (the kNN lists, their
reciprocity, symmetrised views, converters, save and load), modularity against labels and
its permutation null, triangle and labelled-motif counts.

The public functions here are doors: they check a graph and its labels once and hand the
kernels arrays they trust. Imports ``gpugraph.kernels`` and ``gpugraph._util``.
"""
