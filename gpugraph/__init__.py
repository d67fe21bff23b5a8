"""gpugraph: graph analytics of deep-network representations, on the GPU and the CPU.

Exact cosine kNN graphs over the samples of each layer, and measures of those graphs:
modularity against class labels (Lu et al., ECCV 2022), graph-based similarity between
layers (Chen et al., Neurocomputing 2024), triangle and labelled-motif counts, and layer
pruning guided by the modularity curve.
"""

from gpugraph import attacks
from gpugraph._errors import GpuGraphError
from gpugraph.capture import Activations, capture
from gpugraph.curves import LayerCurve, modularity_curve, motif_curve
from gpugraph.knn import KnnGraph, knn_graph
from gpugraph.modularity import NullModularity, modularity, modularity_null
from gpugraph.monitor import CurveMonitor
from gpugraph.motifs import motifs, triangles
from gpugraph.pruning import PrunePlan, model_cost, prune, prune_plan
from gpugraph.similarity import (
    MinibatchCKA,
    SimilarityMatrix,
    cka,
    knn_overlap,
    layer_similarity,
    mutual_knn,
    similarity_matrix,
)
from gpugraph.stitching import Stitched, stitch
from gpugraph.transfer import SourceRanking, rank_sources

__all__ = [
    "Activations",
    "CurveMonitor",
    "GpuGraphError",
    "KnnGraph",
    "LayerCurve",
    "MinibatchCKA",
    "NullModularity",
    "PrunePlan",
    "SimilarityMatrix",
    "SourceRanking",
    "Stitched",
    "attacks",
    "capture",
    "cka",
    "knn_graph",
    "knn_overlap",
    "layer_similarity",
    "model_cost",
    "modularity",
    "modularity_curve",
    "modularity_null",
    "motif_curve",
    "motifs",
    "mutual_knn",
    "prune",
    "prune_plan",
    "rank_sources",
    "similarity_matrix",
    "stitch",
    "triangles",
]
__version__ = "0.1.0"
