"""Fashion-MNIST with a 784-256-128-10 ReLU network trained by Adam.

    graphc train examples/mlp.py          # about 89.5% test accuracy
    graphc show examples/mlp.py --view forward

He initialization keeps the activations' scale through the ReLU layers; the
learning rate decays by a constant factor after every epoch, which lets Adam
settle into a minimum instead of hovering around it.
"""
from graphc import nn

model = nn.Sequential(
    nn.Dense(256, init="he"), nn.relu,
    nn.Dense(128, init="he"), nn.relu,
    nn.Dense(10, init="he"),
)

defaults = {"optimizer": "adam", "lr": 1e-3, "lr_decay": 0.85, "batch_size": 128, "epochs": 15}
