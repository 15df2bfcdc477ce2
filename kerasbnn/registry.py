"""A tiny name -> object registry, used by the zoo, the losses and the command line."""


class Registry:
    """Maps snake_case keys to callables of one kind (`"model"`, `"dataset"`, ...).

    `register` works bare (`@reg.register`), called (`@reg.register()`) or with a key
    (`@reg.register("resnet20")`); `get` raises a `ValueError` that lists the valid keys.
    """

    def __init__(self, kind):
        self.kind = kind
        self._entries = {}

    def register(self, key=None):
        def add(obj, name):
            if name in self._entries and self._entries[name] is not obj:
                raise ValueError(f"A {self.kind} named {name!r} is already registered.")
            self._entries[name] = obj
            return obj

        if callable(key):  # bare decorator
            return add(key, key.__name__)

        def decorator(obj):
            return add(obj, key or obj.__name__)

        return decorator

    def get(self, key):
        if key not in self._entries:
            raise ValueError(
                f"Unknown {self.kind} {key!r}. Valid {self.kind}s: {', '.join(self.keys())}."
            )
        return self._entries[key]

    def remove(self, key):
        """Unregisters `key` (e.g. a plug-in a test registered); returns what it held."""
        self.get(key)
        return self._entries.pop(key)

    def keys(self):
        return sorted(self._entries)

    def __contains__(self, key):
        return key in self._entries
