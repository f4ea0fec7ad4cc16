"""Training and leakage-free evaluation of the regime classifier: the recipe, the forest,
baselines, tuning, scores and the gate. May import: outcomes, model, data, store.

Import from the submodules (``training.config``, ``training.pipeline``...): this
package file stays empty on purpose, so that reading a ``TrainConfig`` (the CLI
parser, the service, the monitor) does not import scikit-learn's model
selection and the whole training pipeline.
"""
