"""A two-layer network written directly in the DSL, without layers.

    graphc show examples/explicit_mlp.py --view grad

Parameters are declared once, at module level, so the training graph and the
inference graph the trainer builds share them.  W has shape (in, out), the
batch-major convention: a batch x of shape (N, 784) times W1 gives (N, 256).
"""
import graphc as gc

W1 = gc.param("W1", (784, 256), init=gc.init.he_normal)
b1 = gc.param("b1", (256,), init=gc.init.zeros)
W2 = gc.param("W2", (256, 10), init=gc.init.glorot_uniform)
b2 = gc.param("b2", (10,), init=gc.init.zeros)


def model(x, training):
    return gc.relu(x @ W1 + b1) @ W2 + b2


def loss(logits, y):
    return gc.softmax_cross_entropy(logits, y)


defaults = {"optimizer": "sgd", "lr": 0.1, "batch_size": 64, "epochs": 10}
