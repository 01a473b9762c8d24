"""Lowering rules for each primitive, written beside it: the NumPy table, the C expression table
shared by the C loops and the CUDA kernels, the CUDA rules of the other ops, and the helpers
generated NumPy code calls."""
