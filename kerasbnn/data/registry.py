"""The dataset registry: `DATASETS` maps a name (`"cifar10"`) to its `ImageDataset`."""

from kerasbnn.registry import Registry

DATASETS = Registry("dataset")


def register_dataset(dataset):
    """Adds an `ImageDataset` instance to `DATASETS` under its `name`; returns it."""
    return DATASETS.register(dataset.name)(dataset)
