r"""Finite-loss checking of a distiller's training step (`TeacherStudent(check_finite=True)`).

With `check_finite`, a step whose loss terms or gradients are NaN or infinite changes no
variable and raises `tf.errors.InvalidArgumentError` naming the first bad term: the
gradients are not applied, and the variables the forward pass wrote (BatchNormalization's
moving statistics) are put back.

Why `TeacherStudent.train_step` is overridden for it: Keras 3's TensorFlow `train_step`
runs the forward pass, `compute_loss`, `tape.gradient` and `optimizer.apply` in one method,
with no hook between the gradients and the update, and the forward pass has already moved
the BatchNormalization statistics before any loss exists. Checking inside `compute_loss`
alone (`tf.debugging.check_numerics`) would stop before the update but after those
statistics changed, and would miss a non-finite gradient of a finite loss; wrapping the
user's optimizer would change what `compile` was given and what is saved. So the checked
step (`FiniteCheck.guarded_train_step`) saves that state first, collects the checks while
`compute_loss` runs (`FiniteCheck.checked`), and applies the gradients only through
`FiniteCheck.guard_step`. Without `check_finite`, Keras' own step runs unchanged.
"""

import keras
import tensorflow as tf
from keras import ops

__all__ = ["FiniteCheck"]


class FiniteCheck:
    """The mix-in of `TeacherStudent` that checks the loss terms and gradients for NaN/inf.

    It reads the distiller's `check_finite`, `term_weights`, `train_teachers`, `teachers`,
    `DESCRIPTIONS` and `WEIGHTS`, and keeps the pending checks of the running step in
    `_pending_checks` (None outside `guarded_train_step`).
    """

    def weighted_name(self, term):
        """How a non-finite message names `term` times its weight (the term was finite)."""
        weight = self.WEIGHTS.get(term, "its weight")
        return (f"{self.DESCRIPTIONS.get(term, term)} is finite, but times {weight}="
                f"{self.term_weights[term]:g} it")

    def non_finite_message(self, name):
        """The error text when `name` (a term, a weighted term or a gradient) is NaN or
        infinite: what stopped, what was kept, and the fix."""
        fix = ("Lower that weight" if " times " in name else
               "Lower the learning rate, or check the inputs and the teachers")
        return (
            f"{type(self).__name__}: {name} is NaN or infinite, so training stopped before "
            "this step's update (the student's weights are those after the last step whose "
            "loss and gradients were finite; this step's batch-norm statistics were put "
            f"back). {fix}")

    def checked(self, value, name, training):
        """`value`, checked for NaN/inf when training with `check_finite`: at once, or
        inside `train_step` after it has put back the step's state (`_pending_checks`)."""
        if not (self.check_finite and training):
            return value
        if self._pending_checks is not None:
            self._pending_checks.append((value, name))
            return value
        return tf.debugging.check_numerics(value, self.non_finite_message(name))

    def forward_state(self):
        """Variables a training forward pass writes (BatchNormalization statistics)."""
        frozen = set() if self.train_teachers else {
            id(v) for t in self.teachers for v in t.variables}
        return [v for v in self.non_trainable_variables if id(v) not in frozen]

    def guard_step(self, saved, gradients):
        """Puts back `saved` state unless every pending term and gradient is finite, then
        checks them (raising `InvalidArgumentError` naming the first bad one); returns
        `gradients` made to wait for the checks."""
        checks, self._pending_checks = self._pending_checks, None
        terms = [ops.all(ops.isfinite(value)) for value, _ in checks]
        if not isinstance(self.optimizer, keras.optimizers.LossScaleOptimizer):
            grads = [ops.all(ops.isfinite(g.values if isinstance(g, tf.IndexedSlices) else g))
                     for g in gradients if g is not None]
            grads_ok = ops.all(ops.stack(grads)) if grads else ops.convert_to_tensor(True)
            checks.append((ops.where(grads_ok, 0.0, float("nan")),
                           "a gradient (with a finite loss)"))
            terms.append(grads_ok)
        finite = ops.all(ops.stack(terms))
        done = []
        for variable, value in saved:
            variable.assign(ops.where(finite, variable.value, value))
            done.append(tf.identity(variable.value))  # after the assignment
        for value, name in checks:  # one after the other: the first bad term is named
            with tf.control_dependencies(done):
                done = [tf.debugging.check_numerics(value, self.non_finite_message(name))]
        with tf.control_dependencies(done):
            return [None if g is None else
                    tf.nest.map_structure(tf.identity, g, expand_composites=True)
                    for g in gradients]

    def guarded_train_step(self, data):
        """Keras' own step, but a step whose loss terms or gradients are not finite changes
        no variable (`guard_step`) and raises; returns the compiled metrics' logs."""
        x, y, sample_weight = keras.utils.unpack_x_y_sample_weight(data)
        saved = [(v, tf.identity(v.value)) for v in self.forward_state()]
        self._pending_checks = []
        with tf.GradientTape() as tape:
            y_pred = self(x, training=True)
            loss = self.compute_loss(x, y, y_pred, sample_weight, training=True)
            scaled = self.optimizer.scale_loss(loss)
        variables = self.trainable_variables
        gradients = tape.gradient(scaled, variables)
        self._pending_checks.append((loss, "loss (with the student's regularization)"))
        self.optimizer.apply(self.guard_step(saved, gradients), variables)
        return self.compute_metrics(x, y, y_pred, sample_weight)
