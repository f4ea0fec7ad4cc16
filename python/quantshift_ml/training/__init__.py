"""Training and leakage-free evaluation of the regime classifier."""

from quantshift_ml.training.config import TrainConfig
from quantshift_ml.training.pipeline import TrainResult, prepare_dataset, train_candidate

__all__ = ["TrainConfig", "TrainResult", "prepare_dataset", "train_candidate"]
