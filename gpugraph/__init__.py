"""gpugraph: graph analytics of deep-network representations, on the GPU and the CPU.

Exact cosine kNN graphs over the samples of each layer, and measures of those graphs:
modularity against class labels (Lu et al., ECCV 2022), graph-based similarity between
layers (Chen et al., Neurocomputing 2024), triangle and labelled-motif counts, and layer
pruning guided by the modularity curve.
"""

from gpugraph import attacks
from gpugraph._util.errors import GpuGraphError
from gpugraph._util.version import __version__ as __version__
from gpugraph.graph.graph import Graph
from gpugraph.graph.knngraph import KnnGraph
from gpugraph.graph.modularity import NullModularity, modularity, modularity_null
from gpugraph.graph.motifs import clustering, motifs, transitivity, triangles
from gpugraph.knn.build import knn_graph
from gpugraph.models.activations import Activations
from gpugraph.models.capture import capture
from gpugraph.similarity.grid import SimilarityMatrix, similarity_matrix
from gpugraph.similarity.layers import MinibatchCKA, cka, knn_overlap, layer_similarity, mutual_knn
from gpugraph.studies.curves import LayerCurve, modularity_curve, motif_curve
from gpugraph.studies.monitor import CurveMonitor
from gpugraph.studies.pruning import PrunePlan, model_cost, prune, prune_plan
from gpugraph.studies.stitching import Stitched, stitch
from gpugraph.studies.transfer import SourceRanking, rank_sources

__all__ = [
    "Activations",
    "CurveMonitor",
    "GpuGraphError",
    "Graph",
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
    "clustering",
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
    "transitivity",
    "triangles",
]
