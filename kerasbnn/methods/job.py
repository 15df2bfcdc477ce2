"""`StudentJob`, what a method gets from the pipeline, and `run_method`, which trains a method's
student once and writes what every method leaves behind."""

import dataclasses
import functools
import os
import shutil
import time

from kerasbnn.methods.registry import METHODS, student_epochs

__all__ = ["StudentJob", "run_method"]


@dataclasses.dataclass
class StudentJob:
    """What a method gets from the pipeline.

    Attributes:
        config: the `RunConfig`.
        run: the `RunDir`.
        info: the dataset's `DatasetInfo`.
        train_ds, val_ds: the training and evaluation datasets.
        teachers: `{bits: model}` of the trained teachers (those `needs_teachers` asked for).
        build: `build(bits, **options)` builds `model.arch` for this dataset.
        evaluate: `evaluate(model)` is the top-1 accuracy on the test split (the result).
        advice: what a non-finite loss message advises.
        print_fn: where progress lines go.
        validate: `validate(model)` is `{"val_accuracy": ...}` on the validation split, or
            `{}` when the run has none.
        bn_ds: training batches without augmentation, in their stored order: BatchNorm
            statistics are recomputed on them, cached teacher logits computed.
        train_indexed: `train_indexed()` gives `train_ds`'s batches with each image's index
            in `bn_ds` as a third element (`kerasbnn.data.load(..., index=True)`).
        precise_bn_ds: `precise_bn_ds(batch_size)` gives the training images without
            augmentation in batches of `batch_size` (`precise_bn`; needed when
            `student.precise_bn` > 0).
    """

    config: object
    run: object
    info: object
    train_ds: object
    val_ds: object
    teachers: dict
    build: object
    evaluate: object
    advice: str = None
    print_fn: object = print
    validate: object = None
    bn_ds: object = None
    train_indexed: object = None
    precise_bn_ds: object = None

    def student(self, **options):
        """The binary student every arm starts from: `model.arch` at 1 bit, `student.binary`
        (and the builder's `options`, e.g. `block`), started by `started`."""
        return self.started(self.build(1, binary=self.config.student.binary, **options))

    def started(self, model):
        """`model` with `student.init: float` given the float teacher's matching weights and
        BatchNorm statistics recomputed over `teachers.bn_batches` batches
        (`kerasbnn.transfer.from_float`); with `random`, as built (Keras' initialization)."""
        if self.config.student.init == "float":
            from kerasbnn.transfer import from_float

            from_float(self.teachers[32], model, self.bn_ds, self.config.teachers.bn_batches)
        return model

    def train_student(self, method, trainer, data=None):
        """The run's student (`student()`) trained by `student.schedule`; returns it and the
        last model `fit` trained (None if a resumed run had no step left to train).

        `trainer(model, step)` returns `(model to fit, callbacks)`: `model` (or a distiller
        around it, built afresh) compiled with a fresh `optimizer()`. `one_step` calls it
        once, step None, on the student and fits it as `student_<method>`. `two_step` is
        ReActNet's two-step training (Liu et al., ECCV 2020, arXiv:2003.03488, §4;
        `kerasbnn.distill.schedules.two_step_phases`): step "step1" on a copy with real-valued
        weights (`float_weight_copy`), whose weights are then copied into the student, step
        "step2" on the student; each fits `student.epochs` epochs as a phase of `run_phases`
        (`student_<method>/step1`, `/step2`), so `--resume` continues from the last one.
        `data` is as in `fit` (both steps), or a callable that returns it: called once, when
        the first step that has epochs left is about to train (a resumed run with no step left
        never calls it; cached teacher logits cost a pass of the teachers).

        Step 2's distiller starts from what the method learned in step 1: the weights of step
        1's distiller that are neither the student's nor a teacher's (MAD's fusion logits theta
        and adapters; `TeacherStudent.own_weights`) are kept in
        `backup/student_<method>/finished/step1_own.npz` when step 1 ends and assigned to step
        2's distiller before it trains, in a resumed run too. Its optimizer starts afresh.
        """
        student = self.student()
        training_data = functools.cache(data) if callable(data) else (lambda: data)
        if self.config.student.schedule == "one_step":
            fitted, callbacks = trainer(student, None)
            self.fit(fitted, method, callbacks, data=training_data())
            return student, fitted
        from kerasbnn.distill.schedules import two_step_phases

        last = [None]

        def train(model, step):
            last[0], callbacks = trainer(model, f"step{step}")
            if step == 2:
                self._carry_own_weights(method, last[0])
            self.fit(last[0], method, callbacks, phase=f"step{step}", data=training_data(),
                     first_pass=(step - 1) * self.config.student.epochs)
            if step == 1 and _own_weights(last[0]):
                _save_weights(_own_weights(last[0]), self._own_path(method))

        self.print_fn(f"[schedule] {method}: ReActNet's two steps of {self.config.student.epochs} "
                      "epoch(s): real-valued weights with binary activations, then binary")
        self.run_phases(method, student, two_step_phases(student, train))
        return student, last[0]

    def _own_path(self, method):
        """Where step 1's own weights are kept (`train_student`)."""
        return os.path.join(self._finished(method), "step1_own.npz")

    def _carry_own_weights(self, method, fitted):
        """Assigns step 1's own weights, kept in `_own_path`, to step 2's `fitted` distiller."""
        weights = _own_weights(fitted)
        if not weights:
            return
        path = self._own_path(method)
        layers = ", ".join(dict.fromkeys(w.path.split("/")[0] for w in weights))
        if not os.path.exists(path):  # a run directory written before they were kept
            self.print_fn(f"[schedule] {method}: step 1's {layers} were not kept (a run from an "
                          "older kerasbnn); step 2 starts them afresh")
            return
        import numpy as np

        with np.load(path) as saved:
            fitted.set_own_weights([saved[f"arr_{i}"] for i in range(len(saved.files))])
        self.print_fn(f"[schedule] {method}: step 2 starts from step 1's {layers}")

    def _finished(self, method):
        """Where `run_phases` keeps `method`'s finished phases."""
        return self.run.finished_phases(method)

    def precise_bn(self, student):
        """Recomputes the trained `student`'s BatchNorm statistics over `student.precise_bn`
        training images (`kerasbnn.utils.precise_batch_norm`: batches of 1,000; Wu & Johnson,
        arXiv:2105.07576, §3) and returns the result fields: `precise_bn` (images used, 0 when
        off or when the student has no trainable BatchNormalization) and, when it ran,
        `accuracy_moving_stats` (the accuracy before)."""
        from kerasbnn.utils.batch_norm import batch_norm_layers, precise_batch_norm

        images = self.config.student.precise_bn
        if not images or not batch_norm_layers(student):
            return {"precise_bn": 0}
        if self.precise_bn_ds is None:
            raise ValueError(f"student.precise_bn={images} needs the job's precise_bn_ds (the "
                             "training images); set student.precise_bn=0 to keep the moving "
                             "averages.")
        moving = self.evaluate(student)
        return {"precise_bn": precise_batch_norm(student, self.precise_bn_ds, images),
                "accuracy_moving_stats": moving}

    def optimizer(self, epochs=None):
        """Adam with cosine decay over `epochs` (default `student.epochs`) at
        `student.learning_rate`: the optimizer of every student."""
        from kerasbnn.training import cosine_adam

        student = self.config.student
        epochs = student.epochs if epochs is None else epochs
        return cosine_adam(student.learning_rate, epochs, int(self.train_ds.cardinality()))

    def delta_rows_per_epoch(self):
        """Rows of the fusion weights' history per epoch (`DeltaHistory`): about 10 in all,
        so that even a one-epoch run shows them move."""
        return max(1, 10 // self.config.student.epochs)

    def fit(self, model, method, callbacks=(), *, phase=None, epochs=None, data=None,
            first_pass=0):
        """`fit_resumable` over `epochs` (default `student.epochs`), logged and backed up as
        `student_<method>`, or `student_<method>/<phase>` for one phase of a schedule, on
        `data` (default `train_ds`; the same batches with cached teacher logits), its epoch 0
        on the data's pass `first_pass` (a later phase: the epochs before it). The backup
        stays after the fit: `run_method` removes it once the student is saved."""
        from kerasbnn.training import fit_resumable

        self._built(model)
        name = self.run.student_step(method, phase)
        return fit_resumable(
            model, self.train_ds if data is None else data, run_dir=self.run.root, name=name,
            epochs=self.config.student.epochs if epochs is None else epochs,
            validation_data=self.val_ds, callbacks=list(callbacks), advice=self.advice,
            divergence=self.config.divergence_factor, keep_backup=True,
            patience=self.config.student.patience, first_pass=first_pass,
            print_fn=self.print_fn,
        )

    def _built(self, model):
        """`model`, built (backups and weight files need built models)."""
        import keras

        if not model.built:
            model(keras.ops.zeros((1, *self.info.input_shape)), training=False)
        return model

    def resumed(self, method):
        """True if a backup of `method`'s training exists (its logs are then appended to)."""
        return os.path.isdir(self.run.backup(self.run.student_step(method)))

    def run_phases(self, method, model, phases):
        """Runs a schedule of phases, each resumable: `phases` is `[(tag, train)]`, where
        `train()` trains `model` (the student, or a trainer holding it) for one phase through
        `fit(..., phase=tag)`, which logs and backs it up.

        After each phase the model's weights (not its optimizer's: every phase starts a fresh
        one) are kept in `backup/student_<method>/finished/<tag>.npz` (atomically); a resumed
        run loads the last finished phase and trains only the phases after it. `run_method`
        removes `backup/student_<method>` once the student is saved.
        """
        folder = self._finished(method)
        done = 0
        while done < len(phases) and os.path.exists(_weights(folder, phases[done][0])):
            done += 1
        if done:
            _load_weights(self._built(model), _weights(folder, phases[done - 1][0]))
            self.print_fn(f"[resume] {method}: phases {', '.join(t for t, _ in phases[:done])} "
                          "finished; they are not trained again")
        for tag, train in phases[done:]:
            train()
            _save_weights(model.weights, _weights(folder, tag))


def _weights(folder, tag):
    return os.path.join(folder, f"{tag}.npz")


def _own_weights(fitted):
    """The method's own weights of what `fit` trains: a distiller's `own_weights()`, none for
    a plain model."""
    own = getattr(fitted, "own_weights", None)
    return own() if callable(own) else []


def _save_weights(weights, path):
    """The variables `weights` (in their order) into `path`, atomically."""
    import keras
    import numpy as np

    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path + ".partial", "wb") as f:
        np.savez(f, *[keras.ops.convert_to_numpy(w) for w in weights])
    os.replace(path + ".partial", path)


def _load_weights(model, path):
    """Assigns the arrays `_save_weights` wrote to `model.weights`."""
    import numpy as np

    with np.load(path) as saved:
        if len(saved.files) != len(model.weights):
            raise ValueError(f"{path} holds {len(saved.files)} weights, {model.name} has "
                             f"{len(model.weights)}: remove {os.path.dirname(path)} and resume.")
        for i, weight in enumerate(model.weights):
            weight.assign(saved[f"arr_{i}"])


def run_method(method, job):
    """Trains `method`'s student unless `students/<method>.keras` exists; returns its path.

    The trained student's BatchNorm statistics are recomputed first (`StudentJob.precise_bn`,
    `student.precise_bn`). Writes `results/student_<method>.json` (accuracy, train seconds,
    the student's budget: `images`, the training images that passed through it in all its
    phases, `student_epochs` x the epoch's; the recomputation, and what the method adds)
    and discards an older conversion of that student.
    """
    from kerasbnn.training import save_atomically

    path = job.run.student(method)
    backup = job.run.backup(job.run.student_step(method))
    if os.path.exists(path):
        shutil.rmtree(backup, ignore_errors=True)  # a kill right after the save left it
        return path
    train = METHODS.get(method)
    start = time.perf_counter()
    student, extra = train(job)
    seconds = time.perf_counter() - start
    recalibrated = job.precise_bn(student)
    result = {"method": method, "accuracy": job.evaluate(student), "train_seconds": seconds,
              "epochs": job.config.student.epochs,
              "learning_rate": job.config.student.learning_rate,
              "schedule": job.config.student.schedule, **recalibrated,
              "images": student_epochs(method, job.config) * int(job.train_ds.cardinality())
              * job.config.data.batch_size}
    if job.validate is not None:
        result.update(job.validate(student))
    result.update(extra)
    job.run.write_json(job.run.student_step(method), result)
    save_atomically(student, path)
    shutil.rmtree(backup, ignore_errors=True)  # only now: a kill before the save loses nothing
    job.run.discard(job.run.convert_step(method))
    return path
