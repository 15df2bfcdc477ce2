"""The `Quantizer` base class: a serializable pure function with a precision."""

import abc

import keras
from keras import ops


class Quantizer(abc.ABC):
    """Base class of every kerasbnn quantizer.

    A quantizer is a callable `q(x, **parameters) -> x_q` with Keras serialization. It is
    not a Layer and holds no variables: a quantizer that learns something (the LSQ step)
    declares it in `parameter_specs`, and the layer that uses it creates and owns the
    weights, then passes them to `__call__` by name.

    Subclasses set `precision` (bits of the output, 32 for float) and implement `call`.
    """

    precision = 32

    def __call__(self, inputs, **parameters):
        return self.call(ops.convert_to_tensor(inputs), **parameters)

    @abc.abstractmethod
    def call(self, inputs, **parameters):
        """Quantize `inputs`; `parameters` are the tensors named in `parameter_specs`."""

    def parameter_specs(self, input_shape):
        """Learnable parameters the host layer must create, as `{name: (shape, initializer)}`."""
        return {}

    def get_config(self):
        return {}

    @classmethod
    def from_config(cls, config):
        return cls(**config)

    def __repr__(self):
        args = ", ".join(f"{k}={v!r}" for k, v in self.get_config().items())
        return f"{type(self).__name__}({args})"

    def __eq__(self, other):
        return type(self) is type(other) and self.get_config() == other.get_config()

    def __hash__(self):
        return hash((type(self).__name__, repr(sorted(self.get_config().items()))))


def register(alias):
    """Class decorator: Keras-serializable as `kerasbnn>ClassName`, and known by `alias`."""

    def decorator(cls):
        cls = keras.saving.register_keras_serializable(package="kerasbnn")(cls)
        cls.alias = alias
        ALIASES[alias] = cls
        return cls

    return decorator


ALIASES = {}
