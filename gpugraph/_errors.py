class GpuGraphError(RuntimeError):
    """A computation cannot run here: a missing optional dependency or device, not bad input."""
