"""`StepTimer`: the wall time of each training step, shared by the benchmarks that time `fit`.

The benchmarks run as scripts (`python benchmarks/x.py`), so this folder is on `sys.path`
and they import it as `from step_timer import StepTimer`.
"""

import time

import keras


class StepTimer(keras.callbacks.Callback):
    """Wall time of each training step after the first `warmup` ones (graph tracing)."""

    def __init__(self, warmup):
        super().__init__()
        self.warmup = warmup
        self.times = []
        self._seen = 0
        self._start = None

    def on_train_batch_begin(self, batch, logs=None):
        self._start = time.perf_counter()

    def on_train_batch_end(self, batch, logs=None):
        self._seen += 1
        if self._seen > self.warmup:
            self.times.append(time.perf_counter() - self._start)
