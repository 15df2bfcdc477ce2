"""Which methods a pipeline run trains side by side, and which teachers they need: both read
the methods' registry (`kerasbnn.methods.METHODS`), never a method's module."""

from kerasbnn import methods


def arms(config):
    """The methods a pipeline run trains side by side: `distill.compare`, or the baseline
    (`none`) and `distill.method`."""
    return list(config.distill.compare) or list(dict.fromkeys(["none", config.distill.method]))


def teacher_bits(config, names):
    """The bit widths of the teachers the methods `names` need: those of `teachers.bits` they
    distil from, and the float teacher (first) whenever any teacher is needed (unless
    `teachers.init: random`, where no teacher starts from it) or, with `student.init: float`,
    a method starts its student from it."""
    needed = set()
    for name in names:
        bits = methods.needs_teachers(name, config)
        needed |= set(config.teachers.bits if bits is None else bits)
        if config.student.init == "float" and methods.METHODS.get(name).builds_student:
            needed.add(32)
    if not needed:
        return []
    first = [32] * (32 in needed or config.teachers.init == "float")
    return [*first, *(b for b in config.teachers.bits if b in needed and b != 32)]
