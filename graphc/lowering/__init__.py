"""Lowering rules for each primitive, written beside it: the NumPy table, the C expression table\nshared by the C loops and the CUDA kernels, and the helpers generated NumPy code calls."""
