"""The one exception of the larq importer."""


class LarqImportError(ValueError):
    """A larq model that cannot be read or cannot be rebuilt in Keras 3.

    The message names the file or layer at fault and what to do about it. `problems`
    holds one line per unsupported layer or object when there are several.
    """

    def __init__(self, message, problems=()):
        super().__init__(message)
        self.problems = list(problems)
