"""Floor 4, similarity between representations of the same samples: graph-based LSim
(Chen et al., 2024), linear CKA (plug-in, unbiased, minibatch), kNN overlap and mutual kNN
(``layers.py``); the layer-by-layer matrix of two models (``grid.py``); the Gram sums both
rest on, in blocks within the memory budget (``gram.py``).

Imports ``gpugraph.knn``, ``gpugraph.graph`` and below.
"""
