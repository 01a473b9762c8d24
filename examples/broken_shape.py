"""BROKEN ON PURPOSE: explicit_mlp.py with a mistyped shape, to show graphc's error.

    graphc show examples/broken_shape.py

W2 is declared (265, 10) where the hidden layer is 256 wide, so the second
matmul cannot be built; graphc names the op, both shapes and the line below
that builds it.
"""
import graphc as gc

W1 = gc.param("W1", (784, 256), init=gc.init.he_normal)
b1 = gc.param("b1", (256,), init=gc.init.zeros)
W2 = gc.param("W2", (265, 10), init=gc.init.glorot_uniform)  # the mistake: 265 instead of 256
b2 = gc.param("b2", (10,), init=gc.init.zeros)


def model(x, training):
    hidden = gc.relu(x @ W1 + b1)
    return hidden @ W2 + b2
