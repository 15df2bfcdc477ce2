"""Training schedules: ReActNet's two-step recipe, as phases (`two_step_phases`, which the
pipeline's `student.schedule: two_step` runs) and on `MultiTeacherDistiller`
(`reactnet_two_step`)."""

import keras

from kerasbnn.distill.multi_teacher import MultiTeacherDistiller
from kerasbnn.transfer import copy_matching_weights

__all__ = ["float_weight_copy", "reactnet_two_step", "two_step_phases"]


def float_weight_copy(model):
    """A copy of `model` whose weight quantizers are removed (activations stay quantized).

    Every layer whose config has `<role>_quantizer` keys (kerasbnn's quantized layers)
    is rebuilt with those set to None except `input_quantizer`, and every weight is copied
    over by layer and variable name (`kerasbnn.transfer.copy_matching_weights`).

    Args:
        model: functional or Sequential model.

    Returns:
        A new model with the same layer names.
    """

    def clone(layer):
        config = layer.get_config()
        for key in config:
            if key.endswith("_quantizer") and key != "input_quantizer":  # kernel, depthwise...
                config[key] = None
        return layer.__class__.from_config(config)

    copy = keras.models.clone_model(model, clone_function=clone)
    copy_matching_weights(model, copy)
    return copy


def two_step_phases(student, train):
    """ReActNet's two-step training (Liu et al., ECCV 2020, arXiv:2003.03488, §4 "two-step
    training") as phases `[(tag, run)]`, to run in order:

    - `"step1"`: `train(model, 1)` on `float_weight_copy(student)` (binary activations,
      real-valued weights), made when the phase runs, from the student's weights then; its
      weights are then copied into `student` (`copy_matching_weights`);
    - `"step2"`: `train(student, 2)`: binary activations and weights, from step 1's weights.

    `train(model, step)` builds what a step needs (a fresh optimizer, a distiller) and trains
    `model` in place, and carries its distiller's own learned weights (MAD's fusion logits and
    adapters, `TeacherStudent.own_weights`) from step 1 into step 2's distiller: the phases
    hand over the student's weights only. `reactnet_two_step` runs the phases one after the
    other; the pipeline (`StudentJob.train_student`, `student.schedule: two_step`) runs each as
    a resumable phase.
    """

    def step_one():
        model = float_weight_copy(student)
        train(model, 1)
        copy_matching_weights(model, student)

    return [("step1", step_one), ("step2", lambda: train(student, 2))]


def reactnet_two_step(student, teachers, x, y=None, *, epochs=(1, 1), optimizer=None,
                      metrics=None, validation_data=None, callbacks=None, batch_size=None,
                      verbose="auto", compile_kwargs=None, **distiller_kwargs):
    """ReActNet's two-step training, each step distilled from the same frozen teachers.

    Step 1 trains `float_weight_copy(student)`: binary activations, float weights (the
    weight quantizers removed). Step 2 copies those weights into `student` itself (binary
    activations and weights) and trains it again. Each step builds a `MultiTeacherDistiller`
    with `distiller_kwargs`; step 2's starts from the fusion logits theta and the adapters
    that step 1's learned (`TeacherStudent.own_weights`), with a fresh optimizer (MAD trains
    its ReActNet-ResNet student this way; Liu et al., ReActNet, ECCV 2020, arXiv:2003.03488,
    use 1e-5 weight decay in step 1 and none in step 2).

    Args:
        student: the binary student (functional model of kerasbnn layers); trained in
            place by step 2.
        teachers: as in `MultiTeacherDistiller`.
        x, y: training data as accepted by `keras.Model.fit`.
        epochs: `(step1_epochs, step2_epochs)`.
        optimizer: callable `step -> optimizer` (step is 1 or 2), so each step gets a
            fresh optimizer and its own schedule and weight decay. Default: Adam(1e-3).
        metrics: compiled metrics, e.g. `["accuracy"]`.
        validation_data, callbacks, batch_size, verbose: passed to both `fit` calls.
        compile_kwargs: other `compile` arguments (`run_eagerly`, `steps_per_execution`).
        **distiller_kwargs: `MultiTeacherDistiller` arguments (`feature_taps`, `kl_weight`,
            `ce_weight=0` for ReActNet's distributional loss alone, ...).

    Returns:
        `(student, [history_step1, history_step2])`.

    Raises:
        ValueError: for `epochs` that is not two non-negative integers, or a non-callable
            `optimizer`.
    """
    if not isinstance(epochs, (list, tuple)) or len(epochs) != 2 or any(
            isinstance(e, bool) or not isinstance(e, int) or e < 0 for e in epochs):
        raise ValueError(
            f"epochs must be two non-negative integers (step 1, step 2), received {epochs!r}.")
    if optimizer is None:
        optimizer = lambda step: keras.optimizers.Adam(1e-3)  # noqa: E731
    if not callable(optimizer) or isinstance(optimizer, keras.optimizers.Optimizer):
        raise ValueError(
            "optimizer must be a callable step -> optimizer (a fresh optimizer per step), "
            f"received {optimizer!r}.")
    histories, own = [], []  # own: step 1's own weights, for step 2's distiller

    def train(model, step):
        distiller = MultiTeacherDistiller(model, teachers, **distiller_kwargs)
        if own:
            distiller.set_own_weights(own)
        distiller.compile(optimizer=optimizer(step), metrics=metrics, **(compile_kwargs or {}))
        histories.append(distiller.fit(
            x, y, epochs=epochs[step - 1], batch_size=batch_size, validation_data=validation_data,
            callbacks=callbacks, verbose=verbose))
        own[:] = [keras.ops.convert_to_numpy(w) for w in distiller.own_weights()]

    for _, run in two_step_phases(student, train):
        run()
    return student, histories
