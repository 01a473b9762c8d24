"""Training a model end to end: the loop, its checkpoints and its history files."""
from graphc.train.checkpoint import Checkpoint
from graphc.train.history import EpochRecord, History
from graphc.train.model_file import ModelFile, ModelFileError, load_model_file
from graphc.train.trainer import (ConfigError, Splits, TrainConfig, Trainer, TrainingError, TrainingInterrupted,
                                  TrainResult, load_splits, make_optimizer)

__all__ = ["Checkpoint", "ConfigError", "EpochRecord", "History", "ModelFile", "ModelFileError", "Splits",
           "TrainConfig", "TrainResult", "Trainer", "TrainingError", "TrainingInterrupted", "load_model_file",
           "load_splits", "make_optimizer"]
