"""YAML read as a config must be read: `yaml.safe_load` (plain data, no `!!python` tag), and a
mapping that names a key twice refused instead of keeping the last value silently."""

import yaml


class DuplicateKeyError(yaml.MarkedYAMLError):
    """A YAML mapping names the same key twice (the later value would silently win)."""


class _UniqueKeyLoader(yaml.SafeLoader):
    """`yaml.SafeLoader` that refuses a mapping with a repeated key instead of keeping the
    last value."""

    def construct_mapping(self, node, deep=False):
        first = {}
        for key_node, _ in node.value:
            key = self.construct_object(key_node, deep=deep)
            try:
                earlier = first.setdefault(key, key_node.start_mark)
            except TypeError:  # an unhashable key: SafeLoader says so itself
                continue
            if earlier is not key_node.start_mark:
                raise DuplicateKeyError(
                    None, None, f"the key {key!r} appears twice in one mapping (lines "
                    f"{earlier.line + 1} and {key_node.start_mark.line + 1}), so one value "
                    "would silently replace the other; keep one", key_node.start_mark)
        return super().construct_mapping(node, deep)


def load(stream):
    """`yaml.safe_load`, refusing repeated keys (`DuplicateKeyError`)."""
    return yaml.load(stream, Loader=_UniqueKeyLoader)  # noqa: S506 (a SafeLoader)
