"""MkDocs hook: the pages generated from the code at build time.

`mkdocs build` (`make docs`) runs `on_files` below, which adds these pages to the site before
the navigation is built, so they always say what the installed code says:

- `reference/config.md`: every field of `kerasbnn.config.RunConfig` and its sections, with
  its type, default and allowed values (bounds from the field's metadata, choices from the
  registries the pipeline checks it against), then the section's docstring;
- `reference/cli.md`: every subcommand, argument and flag of `kerasbnn.cli.build_parser()`,
  with its type, default, choices and help, and the exit statuses;
- `reference/api/<module>.md`: one page per public module (`API_MODULES`), a mkdocstrings
  block for every name of its `__all__`;
- `getting-started/quickstart.md`: `examples/quickstart.ipynb` as a page (markdown cells as
  they are, code cells as Python blocks; the notebook is executed by tests/notebook_test.py);
- `changelog.md`: `CHANGELOG.md`.

tests/docs_test.py imports this file to check that every field, flag and public name is in
the generated pages.
"""

import argparse
import dataclasses
import importlib
import json
import os
import typing

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

# The API reference: one page per module, in this order. A module listed here has an
# `__all__`; its page renders every name of it. kerasbnn's own page links to the others.
API_MODULES = (
    "kerasbnn",
    "kerasbnn.quantizers",
    "kerasbnn.layers",
    "kerasbnn.constraints",
    "kerasbnn.binarization",
    "kerasbnn.models",
    "kerasbnn.distill",
    "kerasbnn.methods",
    "kerasbnn.export",
    "kerasbnn.larq_import",
    "kerasbnn.data",
    "kerasbnn.utils",
    "kerasbnn.transfer",
    "kerasbnn.teacher_cache",
    "kerasbnn.run_dir",
    "kerasbnn.comparison",
    "kerasbnn.presets",
)


def _choices():
    """Allowed values of the config fields checked against a registry or a tuple of names."""
    from kerasbnn import distribution, methods, presets
    from kerasbnn.data.registry import DATASETS
    from kerasbnn.models.registry import MODELS
    from kerasbnn.distill import fusion, losses, multi_teacher
    from kerasbnn.methods import multi_teacher_student
    from kerasbnn.models import precision
    from kerasbnn.run import checks

    return {
        "preset": sorted(presets.PRESETS),
        "distribute": distribution.STRATEGIES,
        "data.name": DATASETS.keys(),
        "model.arch": MODELS.keys(),
        "teachers.quantizer": precision.QUANTIZERS,
        "teachers.bits": "32 (float) or a bit width the quantizer takes",
        "student.binary": precision.BINARY_SCHEMES,
        "student.init": checks.STUDENT_INITS,
        "distill.method": methods.METHODS.keys(),
        "distill.compare": methods.METHODS.keys(),
        "distill.fusion": fusion.FUSION_MODES,
        "distill.feature_reduction": losses.FEATURE_REDUCTIONS,
        "distill.delta_init": checks.DELTA_INITS,
        "distill.delta_objective": multi_teacher.DELTA_OBJECTIVES,
        "distill.teacher_logits": multi_teacher_student.TEACHER_LOGITS,
    }


def _type_name(annotation):
    """`int`, `list[int]`, `int or null` for a dataclass field's annotation."""
    origin, args = typing.get_origin(annotation), typing.get_args(annotation)
    if origin is typing.Union:
        names = [_type_name(a) for a in args if a is not type(None)]
        return " or ".join(names) + (" or null" if type(None) in args else "")
    if origin in (list, typing.List):
        return f"list[{_type_name(args[0])}]" if args else "list"
    return getattr(annotation, "__name__", str(annotation))


def _default(field):
    if field.default is not dataclasses.MISSING:
        value = field.default
    elif field.default_factory is not dataclasses.MISSING:
        value = field.default_factory()
    else:
        return "required"
    if dataclasses.is_dataclass(value):
        return "see below"
    return "`null`" if value is None else f"`{json.dumps(value)}`"


def _allowed(key, field, choices):
    """Choices and bounds of one field, in words."""
    parts = []
    listed = field.metadata.get("choices", choices.get(key))
    if isinstance(listed, str):
        parts.append(listed)
    elif listed is not None:
        parts.append(", ".join(f"`{c}`" for c in listed))
    for bound, words in (("min", ">= {}"), ("above", "> {}"), ("max", "<= {}")):
        if bound in field.metadata:
            parts.append(words.format(field.metadata[bound]))
    return "; ".join(parts) or "any"


def config_fields(cls=None, prefix=""):
    """`(key, field)` for every leaf field of `RunConfig`, sections expanded, in order."""
    from kerasbnn import config

    cls = cls or config.RunConfig
    hints = typing.get_type_hints(cls)
    for field in dataclasses.fields(cls):
        if field.metadata.get(config.SECTIONS):  # the methods' sections: `_method_options`
            continue
        if dataclasses.is_dataclass(hints[field.name]):
            yield from config_fields(hints[field.name], f"{prefix}{field.name}.")
        else:
            yield f"{prefix}{field.name}", field, hints[field.name]


def _method_options():
    """Lines listing the section `distill.<method>` of every method that has options: each
    key with its default and its allowed values."""
    from kerasbnn import methods

    lines = []
    for name in methods.METHODS.keys():
        cls = methods.options_class(name)
        if cls is not None:
            hints = typing.get_type_hints(cls)
            keys = []
            for f in dataclasses.fields(cls):
                kind = "" if hints[f.name] is typing.Any else f"{_type_name(hints[f.name])}, "
                allowed = _allowed("", f, {})
                keys.append(f"`{f.name}` ({kind}default {_default(f)}"
                            + ("" if allowed == "any" else f"; {allowed}") + ")")
            lines.append(f"- `distill.{name}`: " + ", ".join(keys))
    return lines


def config_reference():
    """The markdown of reference/config.md."""
    from kerasbnn import config

    choices = _choices()
    out = ["# Config reference", "",
           "Generated from `kerasbnn.config` when the site is built. A run config is a YAML or",
           "TOML file (`--config run.yaml`) with these sections; `--set section.key=value`",
           "overrides one value. Every key is checked before anything is written: an unknown",
           "key, a wrong type or a value out of range stops the run with exit status 7.", "",
           "The demo's config, `examples/configs/demo.yaml`:", "", "```yaml", _demo_config(), "```", ""]
    sections = [("Top level", config.RunConfig, "")]
    hints = typing.get_type_hints(config.RunConfig)
    sections += [(f"`{f.name}`", hints[f.name], f"{f.name}.")
                 for f in dataclasses.fields(config.RunConfig) if dataclasses.is_dataclass(hints[f.name])]
    for title, cls, prefix in sections:
        out += [f"## {title}", "", "| key | type | default | allowed |", "|---|---|---|---|"]
        own = [(k, f, t) for k, f, t in config_fields(cls, prefix)
               if prefix or "." not in k]
        for key, field, annotation in own:
            out.append(f"| `{key}` | {_type_name(annotation)} | {_default(field)} | "
                       f"{_allowed(key, field, choices)} |")
        out += ["", _dedent(cls.__doc__), ""]
        if prefix == "distill.":
            out += ["Each method with options of its own reads them from its section "
                    "`distill.<method>` (e.g. `distill.pkkd: {sigma_student: 2.0}`); its keys, "
                    "with their types, defaults and allowed values (a key without a type is an "
                    "argument of the method's distiller, which checks it when it builds):", "",
                    *_method_options(), ""]
    return "\n".join(out)


def _demo_config():
    with open(os.path.join(ROOT, "examples", "configs", "demo.yaml"), encoding="utf-8") as f:
        lines = f.read().rstrip().splitlines()
    while lines and lines[0].startswith("#"):  # the file's header comment: its own history
        lines.pop(0)
    return "\n".join(lines)


def _dedent(doc):
    import inspect

    return inspect.cleandoc(doc or "")


def _subcommands(parser):
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            helps = {a.dest: a.help for a in action._choices_actions}
            for name, sub in action.choices.items():
                yield name, helps.get(name, ""), sub


def cli_arguments(parser):
    """`(names, action)` of every argument of one (sub)parser, help excluded."""
    for action in parser._actions:
        if isinstance(action, (argparse._HelpAction, argparse._SubParsersAction)):
            continue
        yield (action.option_strings or [action.dest]), action


def _cell(text):
    return str(text).replace("|", "\\|").replace("\n", " ")


def _argument_row(names, action):
    if isinstance(action, (argparse._StoreTrueAction, argparse._StoreFalseAction)):
        kind = "flag"
    elif isinstance(action, argparse._AppendAction):
        kind = f"{getattr(action.type, '__name__', 'str')}, repeatable"
    else:
        kind = getattr(action.type, "__name__", "str") if action.type else "str"
        kind = "int >= 1" if kind == "_positive_int" else kind
    default = "required" if action.required else (
        "" if action.default in (None, False) else f"`{action.default}`")
    choices = ", ".join(f"`{c}`" for c in action.choices) if action.choices else ""
    shown = ", ".join(f"`{n}`" + (f" `{action.metavar}`" if action.metavar and n.startswith("-") else "")
                      for n in names)
    return f"| {shown} | {kind} | {default} | {choices} | {_cell(action.help or '')} |"


def cli_reference():
    """The markdown of reference/cli.md."""
    from kerasbnn import cli

    parser = cli.build_parser()
    out = ["# Command-line reference", "",
           "Generated from `kerasbnn.cli.build_parser()` when the site is built; "
           "`kerasbnn COMMAND --help` prints the same.", "", _dedent(cli.__doc__), ""]
    for name, summary, sub in _subcommands(parser):
        out += [f"## `kerasbnn {name}`", "", f"{summary}.", ""]
        if sub.description:
            out += [_dedent(sub.description), ""]
        out += ["| argument | type | default | choices | what |", "|---|---|---|---|---|"]
        out += [_argument_row(names, action) for names, action in cli_arguments(sub)]
        out.append("")
    codes = sorted((v, k) for k, v in vars(cli).items() if k.startswith("EXIT_"))
    out += ["## Exit statuses", "", "| status | name in `kerasbnn.cli` |", "|---|---|"]
    out += [f"| {value} | `{name}` |" for value, name in codes]
    out += ["| 2 | argparse: bad usage |", ""]
    return "\n".join(out)


def api_page(module_name):
    """The markdown of one API reference page: a mkdocstrings block per name of `__all__`."""
    module = importlib.import_module(module_name)
    out = [f"# `{module_name}`", ""]
    if module_name == "kerasbnn":
        out += ["Subpackages and modules:", ""]
        for other in API_MODULES[1:]:
            out.append(f"- [`{other}`]({other.split('.', 1)[1]}.md)")
        out.append("")
    out += [f"::: {module_name}", "    options:", "      members: false", "      show_root_heading: false", ""]
    for name in module.__all__:
        value = getattr(module, name)
        if module_name == "kerasbnn" and isinstance(value, type(os)):
            continue
        out += [f"::: {defined_at(module_name, name, value)}", ""]
    return "\n".join(out)


def defined_at(module_name, name, value):
    """Where the renderer finds `module_name.name`: the package loads its functions lazily
    (PEP 562), which static analysis cannot follow, so they are rendered from the module
    that defines them."""
    if module_name == "kerasbnn" and callable(value) and value.__module__ != "kerasbnn":
        return f"{value.__module__}.{value.__qualname__}"
    return f"{module_name}.{name}"


def api_path(module_name):
    """Where `module_name`'s page lives in the site's sources."""
    return "reference/api/" + ("index" if module_name == "kerasbnn" else module_name.split(".", 1)[1]) + ".md"


def notebook_page(path=os.path.join(ROOT, "examples", "quickstart.ipynb")):
    """The quick-start notebook as markdown: markdown cells as they are, code in Python blocks."""
    with open(path, encoding="utf-8") as f:
        notebook = json.load(f)
    out = ["!!! note", "    This page is `examples/quickstart.ipynb`; run it with "
           "`jupyter notebook examples/quickstart.ipynb` (the tests execute it).", ""]
    for cell in notebook["cells"]:
        source = "".join(cell["source"]).rstrip()
        out += [source if cell["cell_type"] == "markdown" else f"```python\n{source}\n```", ""]
    return "\n".join(out)


def generated_pages():
    """`{path in the site's sources: markdown}` of every generated page."""
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    from kerasbnn import cli_support

    cli_support.import_tensorflow_quietly()  # the build's output: mkdocs' lines, not TF's
    with open(os.path.join(ROOT, "CHANGELOG.md"), encoding="utf-8") as f:
        changelog = f.read()
    pages = {"reference/config.md": config_reference(), "reference/cli.md": cli_reference(),
             "getting-started/quickstart.md": notebook_page(), "changelog.md": changelog}
    pages.update({api_path(m): api_page(m) for m in API_MODULES})
    return pages


def on_files(files, config):
    """MkDocs event: add the generated pages (before the navigation is built)."""
    from mkdocs.structure.files import File

    for path, text in generated_pages().items():
        files.append(File.generated(config, path, content=text))
    return files
