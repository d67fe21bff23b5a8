"""Floor 5, working with networks: capturing every layer's activations with forward hooks
(``capture.py``) into :class:`~gpugraph.Activations` (``activations.py``), in memory or
spilled to memory-mapped files (``spill.py``); the small training loop the experiments use
(``training.py``); FGSM and PGD attacks (``attacks.py``, public as ``gpugraph.attacks``).

Imports only ``gpugraph._util``: nothing here measures a graph.
"""
