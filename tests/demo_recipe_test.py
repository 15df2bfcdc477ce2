"""The binary student's recipe in `examples/configs/demo.yaml` reaches the networks and the
optimizer it trains with (docs/benchmarks/recipe.md): not its accuracy, which
`make demo` and `benchmarks/recipe_ablation.py` measure."""

import keras
import numpy as np
import tensorflow as tf

from kerasbnn import config, data, methods
from kerasbnn.layers import QuantConv2D
from kerasbnn.run.teachers import build

DEMO = "examples/configs/demo.yaml"


def _job(values, steps):
    info = data.info(values.data.name)
    x = np.zeros((steps * 4, *info.input_shape), "float32")
    train = tf.data.Dataset.from_tensor_slices((x, np.zeros(steps * 4, "int32"))).batch(4)
    return methods.StudentJob(values, None, info, train, None, {},
                              build=lambda bits, **options: build(values, info, bits, **options),
                              evaluate=None)


def test_the_demo_builds_reactnet_blocks_for_the_teachers_and_the_student():
    values = config.load(DEMO, ["model.width_multiplier=0.25"])
    info = data.info(values.data.name)
    student = build(values, info, 1, binary=values.student.binary)
    binary = [layer for layer in student.layers if isinstance(layer, QuantConv2D)
              and layer.input_quantizer is not None]
    assert len(binary) == 18  # one binary conv per block, 6 blocks per stage
    assert sum(layer.name.endswith("_rsign") for layer in student.layers) == 18
    assert sum(layer.name.endswith("_rprelu") for layer in student.layers) == 18
    assert not [layer for layer in student.layers if layer.name.endswith("_relu")]
    for bits in (32, *values.teachers.bits[1:]):  # the student starts from these weights
        teacher = build(values, info, bits, quantizer=values.teachers.quantizer)
        convs = {layer.name for layer in teacher.layers if isinstance(layer, keras.layers.Conv2D)}
        assert {layer.name for layer in binary} <= convs, bits


def test_the_demo_student_trains_with_cosine_adam_from_its_peak_rate_over_its_epochs():
    values = config.load(DEMO)
    assert (values.student.learning_rate, values.student.epochs) == (0.005, 2)
    optimizer = _job(values, steps=7).optimizer()
    assert isinstance(optimizer, keras.optimizers.Adam)
    schedule = optimizer.get_config()["learning_rate"]
    schedule = keras.optimizers.schedules.deserialize(schedule)
    assert isinstance(schedule, keras.optimizers.schedules.CosineDecay)
    assert schedule.initial_learning_rate == 0.005 and schedule.decay_steps == 2 * 7
    np.testing.assert_allclose([float(schedule(0)), float(schedule(14))], [0.005, 0.0],
                               atol=1e-8)
