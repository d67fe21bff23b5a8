"""Floor 0, the tools every other part uses: errors, JSON files, the memory budget, progress
bars, input conversion (arrays to tensors, labels to codes, ``device=`` to a device) and the
version.

Imports nothing from gpugraph outside this folder.
"""
