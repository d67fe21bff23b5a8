"""Floor 6, the studies built from graphs and models: layer-wise modularity and motif curves
(``curves.py``), curves during training (``monitor.py``), pruning the layers a curve marks
(``pruning.py``), model stitching (``stitching.py``) and ranking transfer sources
(``transfer.py``).

Imports every floor below; nothing below imports it.
"""
