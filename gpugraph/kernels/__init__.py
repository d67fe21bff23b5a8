"""CUDA C++ sources of gpugraph's kernels (installed as the package data gpugraph.kernels)."""
