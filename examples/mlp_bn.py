"""The MLP of mlp.py with batch normalization after each hidden dense layer.

    graphc train examples/mlp_bn.py

Batch norm normalizes each hidden unit over the batch while training and by
its running statistics at inference; those statistics are state the train
step updates and checkpoints save, alongside the parameters.
"""
from graphc import nn

model = nn.Sequential(
    nn.Dense(256, init="he"), nn.BatchNorm(), nn.relu,
    nn.Dense(128, init="he"), nn.BatchNorm(), nn.relu,
    nn.Dense(10, init="he"),
)

defaults = {"optimizer": "adam", "lr": 1e-3, "lr_decay": 0.85, "batch_size": 128, "epochs": 15}
