"""The CPU backend (named ``numpy``): generated NumPy code that calls fused C loops."""
