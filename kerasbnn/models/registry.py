"""The zoo's registry: builders are registered under their snake_case name."""

from kerasbnn.registry import Registry

MODELS = Registry("model")


def register_model(key=None):
    """Decorator adding a builder to the zoo (bare, called, or with an explicit key).

    Example:
    ```python
    @register_model("resnet20")
    def resnet20(input_shape, num_classes, *, bits=32, ...): ...
    ```
    """
    return MODELS.register(key)


def get(name):
    """The builder registered as `name`.

    Raises:
        ValueError: for an unknown name; the message lists the registered builders.
    """
    return MODELS.get(name)


def names():
    """Sorted names of every registered builder."""
    return MODELS.keys()
