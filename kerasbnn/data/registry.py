"""The dataset registry: `DATASETS` maps a name (`"cifar10"`) to its `ImageDataset`."""

from kerasbnn.registry import Registry

DATASETS = Registry("dataset")
"""Every dataset `kerasbnn.data.load` reads, by name, registered by `register_dataset`."""


def register_dataset(dataset):
    """Adds an `ImageDataset` instance to `DATASETS` under its `name`; returns it."""
    return DATASETS.register(dataset.name)(dataset)
