"""graphc: declare a network as a graph, differentiate it symbolically, compile the train step."""
from graphc.ops import *  # noqa: F401,F403  (the DSL: gc.sum, gc.max, gc.input shadow builtins on purpose)
from graphc import primitives  # noqa: F401,E402  (defines every op the DSL builds, with its rules)
from graphc.composites import (log_softmax, logsumexp, mse, sigmoid_binary_cross_entropy,  # noqa: F401
                               softmax, softmax_cross_entropy)
from graphc.autodiff import grad  # noqa: F401
from graphc.interpreter import evaluate  # noqa: F401
from graphc.ir.node import Node  # noqa: F401
from graphc.ir.printing import format_graph  # noqa: F401
from graphc.draw.dot import to_dot  # noqa: F401
from graphc.errors import GraphcError, ShapeError, DTypeError, FeedError, DataError, CheckpointError  # noqa: F401
from graphc.compiler import compile  # noqa: F401,E402
from graphc.compiler.compiled_step import CompiledStep  # noqa: F401,E402
from graphc.compiler.step_cache import clear as clear_cache  # noqa: F401,E402
from graphc.runtime.store import Store  # noqa: F401,E402
from graphc import nn, optim, init  # noqa: F401,E402
