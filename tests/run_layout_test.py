"""The run directory's layout is spelled in `kerasbnn.run.layout` only: `RunDir`'s path
methods return the documented paths, `kerasbnn.resume` records the same ones, and no other
module of the package spells a run-directory path (a new hard-coded one fails here)."""

import ast
import json
import os
import pathlib

import pytest

from kerasbnn import distribution, resume
from kerasbnn.methods import METHODS
from kerasbnn.run import layout
from kerasbnn.run_dir import RunDir

PACKAGE = pathlib.Path(__file__).resolve().parents[1] / "kerasbnn"
LAYOUT_MODULES = {PACKAGE / "run" / "layout.py"}

#: The run directory's folders: spelled as a path argument, they build a run-directory path.
FOLDERS = ("teachers", "students", "tflite", "results", "backup", "logs", "tensorboard",
           "plots", "workers")
#: Fragments of the layout's paths and step names that no string outside it may hold.
FRAGMENTS = (*(f"{folder}/" for folder in FOLDERS), "teacher_w", "delta_history_", "pi_history.",
             "report.md", "failed.json")
#: Strings that hold a fragment but name no run-directory path.
ALLOWED = ("tflite/README.md",)  # the repository's tflite/ folder, which the report cites
#: The calls that build a path from their arguments (`os.path.join`, `RunDir.path`, ...).
PATH_CALLS = ("join", "path", "joinpath", "Path")
#: Step-name prefixes: an f-string piece ending with one spells a step's name.
STEP_PREFIXES = ("teacher_", "student_", "convert_")


def test_run_dir_methods_return_the_documented_paths(tmp_path):
    run, root = RunDir(tmp_path), str(tmp_path)
    files = {
        run.teacher(2): "teachers/w2a2.keras",
        run.student("mad"): "students/mad.keras",
        run.results("student_mad"): "results/student_mad.json",
        run.history("pi_history"): "results/pi_history.csv",
        run.delta_history("mad_step1"): "results/delta_history_mad_step1.csv",
        run.tflite("float_teacher"): "tflite/float_teacher.tflite",
        run.log("student_progressive/lit"): "logs/student_progressive/lit.csv",
        run.plot("accuracy"): "plots/accuracy.png",
        run.report(): "report.md",
    }
    for path, relative in files.items():
        assert path == os.path.join(root, relative)
        assert os.path.isdir(os.path.dirname(path)), relative  # ready to write
    folders = {run.backup("teacher_w2a2"): "backup/teacher_w2a2",
               run.finished_phases("progressive"): "backup/student_progressive/finished"}
    for path, relative in folders.items():
        assert path == os.path.join(root, relative)
    assert not os.path.exists(os.path.join(root, "backup"))  # folders are not created
    assert run.teacher_step(32) == "teacher_w32a32"
    assert run.student_step("mad") == "student_mad"
    assert run.student_step("mad", "step1") == "student_mad/step1"
    assert run.student_step("mad", None) == "student_mad"
    assert run.convert_step("float_teacher") == "convert_float_teacher"


def test_json_results_go_to_the_results_folder(tmp_path):
    run = RunDir(tmp_path)
    run.write_json(run.teacher_step(4), {"accuracy": 0.5})
    with open(tmp_path / "results" / "teacher_w4a4.json") as f:
        assert json.load(f) == {"accuracy": 0.5}
    assert run.read_json("teacher_w4a4") == {"accuracy": 0.5}
    run.discard("teacher_w4a4")
    assert run.read_json("teacher_w4a4") is None
    assert sorted(os.listdir(tmp_path / "results")) == []


def test_other_workers_write_under_workers(tmp_path):
    other = distribution.Worker(task_type="worker", index=1, count=2)
    assert other.run_dir(str(tmp_path)) == os.path.join(tmp_path, "workers", "worker_1")
    assert distribution.Worker().run_dir(str(tmp_path)) == str(tmp_path)


def test_resume_records_the_same_paths_as_run_dir(tmp_path):
    (tmp_path / "teachers").mkdir()
    (tmp_path / "teachers" / "w32a32.keras").write_bytes(b"")
    (tmp_path / "teachers" / "w2a3.keras").write_bytes(b"")  # not a teacher's name
    (tmp_path / "backup" / "teacher_w2a2").mkdir(parents=True)
    assert layout.teacher_bits(tmp_path) == {32, 2}
    steps = {s.name: s for s in resume.known_steps(str(tmp_path), {"mad": ("distill.",)})}
    assert sorted(steps) == ["convert float_teacher", "convert mad", "student mad",
                             "teacher w2a2", "teacher w32a32"]
    teacher, student = steps["teacher w32a32"], steps["student mad"]
    assert (teacher.artifact, teacher.backup, teacher.also, teacher.downstream) == (
        "teachers/w32a32.keras", "teacher_w32a32", ("results/teacher_w32a32.json",),
        ("results/convert_float_teacher.json",))
    assert (student.artifact, student.backup, student.also, student.downstream) == (
        "students/mad.keras", "student_mad", ("results/student_mad.json",),
        ("results/convert_mad.json",))
    assert steps["convert mad"].artifact == "results/convert_mad.json"
    assert steps["convert mad"].also == ("tflite/mad.tflite",)
    run = RunDir(tmp_path)
    assert os.path.join(run.root, teacher.artifact) == run.teacher(32)
    assert os.path.join(run.root, layout.backup(student.backup)) == run.backup(
        run.student_step("mad"))


def _docstrings(tree):
    """The docstring nodes of a module, its classes and functions (documentation may show
    the layout)."""
    found = set()
    for node in ast.walk(tree):
        if isinstance(node, (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef)):
            body = node.body
            if body and isinstance(body[0], ast.Expr) and isinstance(body[0].value, ast.Constant):
                found.add(id(body[0].value))
    return found


def spelled_paths(source, step_names=()):
    """`[(line, text)]`: where `source` spells a run-directory path or a step's name."""
    tree, found = ast.parse(source), []
    skip = _docstrings(tree)
    for node in ast.walk(tree):
        if isinstance(node, ast.Constant) and isinstance(node.value, str) and id(node) not in skip:
            text = node.value
            if (any(f in text for f in FRAGMENTS) and not any(a in text for a in ALLOWED)
                    or text in step_names):
                found.append((node.lineno, text))
        elif isinstance(node, ast.JoinedStr):
            found += [(node.lineno, piece.value) for piece, after in zip(node.values,
                                                                         node.values[1:])
                      if isinstance(piece, ast.Constant) and isinstance(after, ast.FormattedValue)
                      and piece.value.endswith(STEP_PREFIXES)]
        elif isinstance(node, ast.Call) and _called(node) in PATH_CALLS:
            found += [(node.lineno, a.value) for a in node.args
                      if isinstance(a, ast.Constant) and a.value in FOLDERS]
        elif isinstance(node, ast.BinOp) and isinstance(node.op, ast.Div):
            found += [(node.lineno, a.value) for a in (node.left, node.right)
                      if isinstance(a, ast.Constant) and a.value in FOLDERS]
    return found


def _called(call):
    """The name of what `call` calls (`os.path.join(...)`: "join")."""
    func = call.func
    return func.attr if isinstance(func, ast.Attribute) else getattr(func, "id", None)


def _step_names():
    """Every method's student step and conversion, and the float teacher's."""
    names = {*METHODS.keys(), "float_teacher"}
    return {f"{prefix}{name}" for prefix in ("student_", "convert_") for name in names}


@pytest.mark.parametrize("source", [
    'os.path.join(root, "backup", name)',
    'run.path("teachers", f"w{bits}a{bits}.keras")',
    'pathlib.Path(root) / "logs"',
    'name = f"student_{method}"',
    'x = f"teacher_w{b}a{b}"',
    'run.read_json(f"convert_{name}")',
    'run.read_json("student_mad")',
    'path = "results/failed.json"',
    'print(f"[convert] {name} -> tflite/{name}.tflite")',
])
def test_the_check_finds_a_hard_coded_path(source):
    assert spelled_paths(source, _step_names()), source


def test_the_check_passes_docstrings_and_other_strings():
    source = ('def f():\n'
              '    """Writes `teachers/w<b>a<b>.keras` and `results/student_mad.json`."""\n'
              '    return ({"student_loss": 1.0, "teachers": [32]}, f"w{b}",\n'
              '            "see tflite/README.md", nan_advice(config, "teachers"))\n')
    assert spelled_paths(source, _step_names()) == []


def test_no_module_but_the_layout_spells_a_run_directory_path():
    names = _step_names()
    found = [f"{path.relative_to(PACKAGE.parent)}:{line}: {text!r}"
             for path in sorted(PACKAGE.rglob("*.py")) if path not in LAYOUT_MODULES
             for line, text in spelled_paths(path.read_text(), names)]
    assert found == [], ("use RunDir's path methods (kerasbnn.run.layout) instead of:\n"
                         + "\n".join(found))
