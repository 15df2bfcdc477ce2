"""Training under `tf.distribute`: one host's devices, or several hosts from `TF_CONFIG`.

`kerasbnn train|distill|pipeline --distribute mirrored|multiworker` and the config key
`distribute` go through `scope(name)`:

- "mirrored": `tf.distribute.MirroredStrategy` over every device of this host.
- "multiworker": `MultiWorkerMirroredStrategy` (below) across the hosts listed in the
  `TF_CONFIG` environment variable. Start the same command on every host, each with its
  own `TF_CONFIG` task. `data.batch_size` is the global batch, split over all replicas.
  The chief (task `chief`, or `worker` 0 when there is no chief) writes the run directory;
  every other worker writes its own copy under `<run_dir>/workers/<type>_<index>/` so
  that no two processes write the same file, and stops after training (conversion,
  benchmarks and the report are the chief's).

In a notebook or script of your own, `with multi_worker_strategy().scope():` builds and
compiles a model that `fit` trains across workers.
"""

import contextlib
import dataclasses
import json
import os

import tensorflow as tf

from kerasbnn.config import STRATEGIES
from kerasbnn.run import layout

_TF_CONFIG_EXAMPLE = (
    'TF_CONFIG=\'{"cluster": {"worker": ["host1:12345", "host2:12345"]}, '
    '"task": {"type": "worker", "index": 0}}\''
)


class DistributeError(ValueError):
    """`distribute` names no strategy, or `TF_CONFIG` does not describe this worker."""


@dataclasses.dataclass(frozen=True)
class Worker:
    """This process's place in the cluster (one process, the chief, when not multi-worker)."""

    task_type: str = "worker"
    index: int = 0
    count: int = 1
    has_chief_task: bool = False

    @property
    def is_chief(self):
        """The task that writes the run: `chief`, or `worker` 0 when no task is `chief`."""
        if self.task_type == "chief":
            return True
        return self.task_type == "worker" and self.index == 0 and not self.has_chief_task

    def run_dir(self, run_dir):
        """Where this process writes: `run_dir` for the chief, a private subfolder otherwise."""
        if self.is_chief:
            return run_dir
        return os.path.join(run_dir, layout.worker(self.task_type, self.index))


def worker(name, environ=None):
    """Checks `name` (and `TF_CONFIG` for "multiworker") before any TensorFlow op runs.

    Returns:
        The `Worker` this process is.

    Raises:
        DistributeError: an unknown strategy, or a missing or malformed `TF_CONFIG`,
            with what to set.
    """
    if name not in STRATEGIES:
        raise DistributeError(f"Unknown distribute {name!r}; valid: {', '.join(STRATEGIES)}.")
    if name != "multiworker":
        return Worker()
    environ = os.environ if environ is None else environ
    raw = environ.get("TF_CONFIG")
    fix = f"Set it on every host before starting the run, e.g. {_TF_CONFIG_EXAMPLE}."
    if not raw:
        raise DistributeError(
            f"distribute=multiworker needs the TF_CONFIG environment variable. {fix}")
    try:
        tf_config = json.loads(raw)
        cluster, task = tf_config["cluster"], tf_config["task"]
        task_type, index = task["type"], int(task["index"])
        hosts = list(cluster.get(task_type, []))
    except (ValueError, KeyError, TypeError) as error:
        raise DistributeError(
            f"TF_CONFIG is not a cluster description ({type(error).__name__}: {error}): it needs "
            f"'cluster' with this task's type and 'task' with 'type' and 'index'. {fix}"
        ) from None
    if task_type not in ("chief", "worker"):
        raise DistributeError(
            f"TF_CONFIG task type {task_type!r} cannot train under MultiWorkerMirroredStrategy; "
            "use 'chief' or 'worker'.")
    if not 0 <= index < len(hosts):
        raise DistributeError(
            f"TF_CONFIG task index {index} is outside cluster[{task_type!r}], which lists "
            f"{len(hosts)} host(s). Give each host its own index from 0 to {len(hosts) - 1}.")
    count = sum(len(cluster.get(t, [])) for t in ("chief", "worker"))
    return Worker(task_type, index, count, has_chief_task=bool(cluster.get("chief")))


class MultiWorkerMirroredStrategy(tf.distribute.MultiWorkerMirroredStrategy):
    """`tf.distribute.MultiWorkerMirroredStrategy` whose `reduce` takes what Keras 3 passes.

    Keras 3's `fit` calls `Strategy.reduce` with a nested batch and with `axis=0` on scalar
    logs when the strategy is multi-worker (keras-team/keras#20585), which the stock class
    rejects. This `reduce` maps over nests and reduces scalars across replicas; everything
    else is TensorFlow's.
    """

    def reduce(self, reduce_op, value, axis):
        def one(v):
            rank = len(self.experimental_local_results(v)[0].shape)
            return super(MultiWorkerMirroredStrategy, self).reduce(
                reduce_op, v, axis if rank else None)

        return tf.nest.map_structure(one, value)


_MULTI_WORKER = None


def multi_worker_strategy():
    """The process's `MultiWorkerMirroredStrategy`, created on first use (once per process).

    Create it before any other TensorFlow op runs: TensorFlow configures its collective
    ops at start-up and refuses afterwards.
    """
    global _MULTI_WORKER
    if _MULTI_WORKER is None:
        _MULTI_WORKER = MultiWorkerMirroredStrategy()
    return _MULTI_WORKER


def scope(name, print_fn=print):
    """The scope models are built, compiled and trained in: a `tf.distribute` strategy's.

    "none" is TensorFlow's default strategy; see the module docstring for the others.
    """
    worker(name)
    if name == "none":
        return contextlib.nullcontext()
    if name == "mirrored":
        strategy = tf.distribute.MirroredStrategy()
        label = "MirroredStrategy"
    else:
        strategy = multi_worker_strategy()
        resolver = strategy.cluster_resolver
        label = f"MultiWorkerMirroredStrategy ({resolver.task_type} {resolver.task_id})"
    print_fn(f"[distribute] {label} over {strategy.num_replicas_in_sync} replicas: "
             f"{', '.join(strategy.extended.worker_devices)}")
    return strategy.scope()
