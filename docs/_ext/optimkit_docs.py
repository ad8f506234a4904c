"""Pages generated from the package at build time, so that the site cannot drift from the code.

On `builder-inited` this writes (each file only when its text changed, stale files removed):

  api/optimizers/index.md        the families, each optimizer with its reference and optax name
  api/optimizers/family-<f>.md   one page per family, listing its optimizers
  api/optimizers/<name>.md       one page per registered optimizer: its docstring (signature,
                                 equations, Args) through autodoc, then tables read from
                                 `optimkit.registry` and its signature: reference, the parity
                                 error the README's table measured, optax's name and
                                 `optax_mode`, every argument's default, kind and valid range
  api/primitives.md              every primitive of `optimkit.transforms`, by module
  api/states.md                  every state NamedTuple, by module
  _fragments/optax_table.md      the argument-by-argument optax table (included by a guide)
  _fragments/torch_table.md      the torch.optim defaults side by side (included by a guide)
  _fragments/parity_table.md     the README's parity table (included by a guide)

Nothing here is written by hand per optimizer: declaring an optimizer puts it on the site.
"""

from __future__ import annotations

import importlib
import inspect
import math
import pathlib
import pkgutil
import re
import types
from typing import Any

GENERATED = ("api/optimizers", "api/primitives.md", "api/states.md", "_fragments")

# What a family is, in the order the site lists them.
FAMILIES = {
    "classic": "SGD, momentum, AdaGrad, RMSprop, Adadelta: the optimizers every framework has.",
    "adaptive": "Adam and its descendants: per-coordinate second-moment scaling.",
    "sign": "Updates from the sign of a momentum or gradient (Lion, signSGD, Rprop).",
    "factored": "Second moments stored as row and column statistics (Adafactor, CAME, SM3).",
    "trust_ratio": "Layer-wise trust ratios for large batches (LAMB, LARS).",
    "second_order": "Diagonal Hessian estimates (Sophia).",
    "schedule_free": "Iterate averaging instead of a learning-rate schedule.",
    "matrix": "Whole-matrix updates (Muon's orthogonalised momentum).",
    "kronecker": "Kronecker-factored preconditioners (Shampoo, SOAP, Kron).",
    "lr_free": "Learning-rate-free methods that estimate the step size (D-Adaptation, Prodigy).",
    "low_rank": "Optimizer state in a low-rank projection of the gradients (GaLore).",
}

# torch.optim's arguments whose optimkit counterpart has another name (an argument of the same
# name is its own counterpart), with what to know when moving the value across.
TORCH_NAMES = {
    "lr": ("learning_rate", ""),
    "betas": (("b1", "b2"), ""),
    "alpha": ("decay", ""),  # RMSprop's smoothing constant
    "etas": (("eta_minus", "eta_plus"), ""),
    "step_sizes": (("min_step_size", "max_step_size"), ""),
    "beta2_decay": ("decay_rate", ("torch's beta2_t = 1 - t^beta2_decay, optimkit's "
                                   "1 - t^-decay_rate: decay_rate = -beta2_decay")),
}
# torch.optim's implementation switches, which have no meaning for a JAX transformation.
TORCH_IMPLEMENTATION = {"params", "self", "foreach", "maximize", "capturable", "differentiable",
                        "fused"}


def _write(root: pathlib.Path, relative: str, text: str, written: set[pathlib.Path]) -> None:
  path = root / relative
  path.parent.mkdir(parents=True, exist_ok=True)
  written.add(path)
  if not path.exists() or path.read_text() != text:
    path.write_text(text)


def _remove_stale(root: pathlib.Path, written: set[pathlib.Path]) -> None:
  for entry in GENERATED:
    target = root / entry
    files = [target] if target.suffix else list(target.rglob("*")) if target.exists() else []
    for path in files:
      if path.is_file() and path not in written:
        path.unlink()


def _cell(text: Any) -> str:
  """Text safe inside a Markdown table cell."""
  return str(text).replace("|", "\\|").replace("\n", " ").strip() or "-"


def _code(text: Any) -> str:
  return "`" + str(text).replace("`", "'") + "`"


def _default(parameter: inspect.Parameter) -> str:
  if parameter.default is inspect.Parameter.empty:
    return "required"
  return _code(repr(parameter.default))


def _range(spec: dict[str, Any] | None) -> str:
  if not spec:
    return "-"
  low, high = spec.get("low", -math.inf), spec.get("high", math.inf)
  if spec.get("integer"):
    return f"integer >= {low}" if high == math.inf else f"integer in [{low}, {high}]"
  if high == math.inf:
    return f"> {low}" if spec.get("low_inclusive", True) is False else f">= {low}"
  left = "[" if spec.get("low_inclusive", True) else "("
  right = "]" if spec.get("high_inclusive", True) else ")"
  return f"{left}{low}, {high}{right}"


def _kind(info: Any, parameter: inspect.Parameter) -> str:
  annotation = str(parameter.annotation)
  if parameter.name in info.structural:
    return "structural"
  if parameter.name in info.ranges:
    return "hyperparameter, or a schedule" if "Schedule" in annotation else "hyperparameter"
  if parameter.name == "state_storage":
    return "storage format"
  return "option"


def parity_rows(readme: str) -> dict[str, tuple[str, str, str]]:
  """{optimizer name: (README's first cell, its references, its largest relative error)} from
  the README's "Reference parity" table; the numbers are the tests' measurements."""
  section = readme.split("## Reference parity", 1)
  if len(section) < 2:
    return {}
  rows = {}
  for line in section[1].split("\n## ", 1)[0].splitlines():
    cells = [c.strip() for c in line.strip().strip("|").split("|")]
    if len(cells) != 3 or cells[0] in ("optimkit", "---"):
      continue
    for name in re.findall(r"`([a-z0-9_]+)`", cells[0]):
      rows[name] = (cells[0], cells[1], cells[2])
  return rows


def optimizer_page(info: Any, parity: dict[str, tuple[str, str, str]]) -> str:
  import optimkit

  signature = inspect.signature(info.make)
  lines = [f"# `{info.name}`", "", "```{eval-rst}", f".. autofunction:: optimkit.{info.name}",
           "```", "", "## At a glance", "", "| | |", "|---|---|",
           f"| family | [{info.family}](family-{info.family}.md) |",
           f"| tested against | {_cell(info.reference)} |"]
  row = parity.get(info.name) or (parity.get(info.shortcut_of) if info.shortcut_of else None)
  if row:
    lines.append(f"| largest relative error measured (float64, 120 steps) | {_cell(row[2])} "
                 f"(README's parity table: {_cell(row[1])}) |")
  else:
    lines.append("| largest relative error measured | not in the README's parity table yet; "
                 "the parity test is in `tests/` |")
  lines.append(f"| typical learning rate | {_code(info.typical_lr)} |")
  if info.optax:
    lines.append(f"| optax equivalent | {_code('optax.' + info.optax)} |")
    mode = ", ".join(f"{k}={getattr(v, '__name__', None) or repr(v)}"
                     for k, v in info.optax_mode.items())
    lines.append(f"| arguments that give optax's trajectory | "
                 f"{_code(mode) if mode else 'none: the defaults agree'} |")
    if info.optax_differs:
      lines.append(f"| still differs from optax | {_cell(info.optax_differs)} |")
  else:
    lines.append("| optax equivalent | none |")
  if info.needs:
    lines.append(f"| `update` needs | {', '.join(_code(n + '=') for n in info.needs)} |")
  if info.shortcut_of:
    base = inspect.signature(optimkit.registry.get(info.shortcut_of).make).parameters
    fixed = [name for name in base if name not in signature.parameters]
    lines.append(f"| shortcut of | [`{info.shortcut_of}`]({info.shortcut_of}.md), fixing "
                 f"{', '.join(_code(n) for n in fixed)} |")
  lines += ["", "## Arguments", "",
            ("Read from the signature and the registry when this page was built. A "
             "hyperparameter lives in the state (`optimkit.set_hyperparams` changes it without "
             "recompiling); a structural argument decides the state's shapes or the compiled "
             "program."), "",
            "| argument | default | kind | valid range |", "|---|---|---|---|"]
  for name, parameter in signature.parameters.items():
    keyword = " (keyword-only)" if parameter.kind is inspect.Parameter.KEYWORD_ONLY else ""
    lines.append(f"| {_code(name)}{keyword} | {_cell(_default(parameter))} | "
                 f"{_kind(info, parameter)} | {_cell(_range(info.ranges.get(name)))} |")
  return "\n".join(lines) + "\n"


def _families(registry: Any) -> list[str]:
  found = {registry.get(n).family for n in registry.names()}
  return sorted(found, key=lambda f: (list(FAMILIES).index(f) if f in FAMILIES else len(FAMILIES),
                                      f))


def _family_table(registry: Any, family: str, prefix: str) -> list[str]:
  lines = ["| optimizer | tested against | optax |", "|---|---|---|"]
  for name in registry.names(family):
    info = registry.get(name)
    lines.append(f"| [`{name}`]({prefix}{name}.md) | {_cell(info.reference)} | "
                 f"{_code('optax.' + info.optax) if info.optax else '-'} |")
  return lines


def optimizers_index(registry: Any) -> str:
  lines = ["# Optimizers", "",
           ("Every optimizer declared in `optimkit.optimizers`, by the family `optimkit.registry` "
            "gives it. Each page shows the docstring (equations, defaults, arguments), the "
            "reference implementation it is tested against, the parity error measured, optax's "
            "equivalent and every argument's valid range."), ""]
  toctree = ["```{toctree}", ":hidden:", ""]
  for family in _families(registry):
    lines += [f"## [{family}](family-{family}.md)", "", FAMILIES.get(family, ""), ""]
    lines += _family_table(registry, family, "") + [""]
    toctree.append(f"family-{family}")
  return "\n".join(lines + toctree + ["```", ""])


def family_page(registry: Any, family: str) -> str:
  lines = [f"# {family}", "", FAMILIES.get(family, ""), ""]
  lines += _family_table(registry, family, "") + ["", "```{toctree}", ":hidden:", ""]
  lines += registry.names(family)
  return "\n".join(lines + ["```", ""])


def _transform_modules() -> list[types.ModuleType]:
  import optimkit.transforms as transforms
  return [importlib.import_module(f"optimkit.transforms.{m.name}")
          for m in pkgutil.iter_modules(transforms.__path__) if not m.name.startswith("_")]


def public_transform_names() -> dict[str, list[str]]:
  """{module: [public names defined there]}: what `optimkit.transforms` or `optimkit`
  re-exports from each primitive module."""
  import optimkit
  import optimkit.transforms as transforms
  exported = {n: getattr(transforms, n) for n in dir(transforms) if not n.startswith("_")}
  exported.update({n: getattr(optimkit, n) for n in dir(optimkit) if not n.startswith("_")})
  by_module: dict[str, list[str]] = {}
  for module in _transform_modules():
    names = sorted(n for n, obj in vars(module).items() if not n.startswith("_")
                   and exported.get(n) is obj and getattr(obj, "__module__", None) ==
                   module.__name__)
    if names:
      by_module[module.__name__] = names
  return by_module


def _is_state(obj: Any) -> bool:
  return isinstance(obj, type) and issubclass(obj, tuple) and hasattr(obj, "_fields")


def _title(module_name: str) -> str:
  """`adam_mini`: the module docstring's first words, up to a parenthesis, colon or full stop
  (within about 80 characters)."""
  module = importlib.import_module(module_name)
  paragraph = " ".join((module.__doc__ or "").strip().split("\n\n")[0].split())
  sentence = re.split(r" \(|[.:;] ", paragraph + " ", maxsplit=1)[0].rstrip(". ")
  if len(sentence) > 80:
    sentence = sentence[:80].rsplit(" ", 1)[0].rstrip(",;:(") + " ..."
  short = module_name.rsplit(".", 1)[1]
  return f"`{short}`: {sentence}" if sentence else f"`{short}`"


def primitives_page(by_module: dict[str, list[str]]) -> str:
  lines = ["# Primitives", "",
           ("The gradient transformations optimizers are chained from, one algorithm family per "
            "module of `optimkit.transforms` (each also importable as "
            "`optimkit.transforms.<name>`). Their states are on the [states](states.md) page."),
           ""]
  for module_name, names in by_module.items():
    module = importlib.import_module(module_name)
    functions = [n for n in names if not _is_state(getattr(module, n))]
    if not functions:
      continue
    lines += [f"## {_title(module_name)}", "", "```{eval-rst}",
              f".. automodule:: {module_name}\n   :no-members:\n"]
    for name in functions:
      obj = getattr(module, name)
      directive = "autoexception" if isinstance(obj, type) and issubclass(obj, BaseException) \
          else "autoclass" if isinstance(obj, type) else "autofunction"
      lines.append(f".. {directive}:: {module_name}.{name}")
    lines += ["```", ""]
  return "\n".join(lines)


def states_page(by_module: dict[str, list[str]]) -> str:
  lines = ["# States", "",
           ("Each primitive's state is a `NamedTuple` of plain arrays (and nested states), so it "
            "shards, checkpoints and donates like the params. The fields are listed in the "
            "signature."), ""]
  for module_name, names in by_module.items():
    module = importlib.import_module(module_name)
    states = [n for n in names if _is_state(getattr(module, n))]
    if not states:
      continue
    lines += [f"## {_title(module_name)}", "", "```{eval-rst}"]
    lines += [f".. autoclass:: {module_name}.{name}\n   :no-members:\n" for name in states]
    lines += ["```", ""]
  return "\n".join(lines)


def optax_table(registry: Any) -> str:
  """optax's arguments next to optimkit's, read from both signatures at build time."""
  lines = []
  for name in registry.names():
    info = registry.get(name)
    function = info.optax_function()
    if function is None:
      continue
    theirs = inspect.signature(function).parameters
    ours = inspect.signature(info.make).parameters
    lines += [f"### `{name}` and `optax.{info.optax}`", ""]
    mode = {k: getattr(v, "__name__", None) or repr(v) for k, v in info.optax_mode.items()}
    if mode:
      lines.append("optimkit follows the authors' reference here; "
                   + ", ".join(_code(f"{k}={v}") for k, v in mode.items())
                   + (" give" if len(mode) > 1 else " gives") + " optax's trajectory.")
    else:
      lines.append("With optax's defaults the trajectory is optax's.")
    if info.optax_differs:
      lines.append(f"Still different: {info.optax_differs}")
    lines += ["", "| optax argument | optax default | optimkit default | note |",
              "|---|---|---|---|"]
    for position, (arg, parameter) in enumerate(theirs.items()):
      mine = ours.get(arg)
      if mine is None:
        note = "not taken by optimkit"
        ours_default = "-"
      else:
        ours_default = _default(mine)
        notes = []
        if list(ours).index(arg) != position:
          notes.append(f"position {list(ours).index(arg)} (optax: {position})")
        if repr(getattr(mine.default, "value", mine.default)) != repr(parameter.default) and \
            mine.default is not inspect.Parameter.empty:
          notes.append("**default differs**")
        if arg in mode:
          notes.append(f"set {_code(f'{arg}={mode[arg]}')} for optax's behaviour")
        note = "; ".join(notes) or "same"
      lines.append(f"| {_code(arg)} | {_cell(_default(parameter))} | {_cell(ours_default)} | "
                   f"{note} |")
    extra = [a for a in ours if a not in theirs]
    if extra:
      keyword_only = all(ours[a].kind is inspect.Parameter.KEYWORD_ONLY for a in extra)
      lines += ["", f"optimkit only{' (keyword-only)' if keyword_only else ''}: " + ", ".join(
          f"{_code(a)} = {_default(ours[a])}" for a in extra) + "."]
    lines.append("")
  return "\n".join(lines)


def _same_values(theirs: tuple, ours: tuple) -> bool:
  if len(theirs) != len(ours):
    return False
  for a, b in zip(theirs, ours):
    numbers = all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in (a, b))
    if not (float(a) == float(b) if numbers else a == b):
      return False
  return True


def torch_table(registry: Any) -> str:
  """torch.optim's defaults next to optimkit's for each optimizer tested against torch.optim."""
  try:
    import torch.optim
  except ImportError:  # the docs extra alone does not install torch
    return ("```{note}\nThis table is read from `torch.optim` when the site is built; torch was "
            "not installed in the environment that built this copy.\n```\n")
  lines = []
  seen = set()
  for name in registry.names():
    info = registry.get(name)
    if info.shortcut_of:
      continue
    for cls_name in re.findall(r"torch\.optim\.([A-Za-z]+)", info.reference):
      if (cls_name, name) in seen or not hasattr(torch.optim, cls_name):
        continue
      seen.add((cls_name, name))
      theirs = inspect.signature(getattr(torch.optim, cls_name).__init__).parameters
      ours = inspect.signature(info.make).parameters
      lines += [f"### `torch.optim.{cls_name}` -> `optimkit.{name}`", "",
                f"Tested against (registry): {info.reference}.", "",
                "| torch argument | torch default | optimkit argument | optimkit default | note |",
                "|---|---|---|---|---|"]
      for arg, parameter in theirs.items():
        if arg in TORCH_IMPLEMENTATION or parameter.kind is inspect.Parameter.VAR_KEYWORD:
          continue
        mapped, note = (arg, "") if arg in ours else TORCH_NAMES.get(arg, (arg, ""))
        names = mapped if isinstance(mapped, tuple) else (mapped,)
        present = [n for n in names if n in ours]
        if present:
          mine = ", ".join(_code(n) for n in present)
          default = ", ".join(_cell(_default(ours[n])) for n in present)
          torch_values = parameter.default if isinstance(parameter.default, tuple) else \
              (parameter.default,)
          ours_values = tuple(getattr(ours[n].default, "value", ours[n].default) for n in present)
          if not note and not _same_values(torch_values, ours_values):
            note = "**default differs**"
        else:
          mine, default = "-", "-"
          note = note or "no argument of that name"
        lines.append(f"| {_code(arg)} | {_cell(_default(parameter))} | {mine} | {default} | "
                     f"{_cell(note)} |")
      lines.append("")
  return "\n".join(lines)


def parity_table(readme: str) -> str:
  section = readme.split("## Reference parity", 1)[1].split("\n## ", 1)[0]
  return section.strip() + "\n"


# ----------------------------------------------------------------------------------------------
# optimkit's docstrings are plain text in Google style (Args:, Returns:, read by napoleon) with
# equations and code as indented blocks, `|x|` for absolute values and `*args` in prose. Read as
# reStructuredText those are block quotes, substitution references and emphasis; this reads them
# as what they are, so the package's docstrings stay readable in `help()` and need no markup.

_BULLET = re.compile(r"^([-*+]|\d+[.)]|#\.)\s+")
_FIELD = re.compile(r"^:[^:]+:")
_EMPHASIS = re.compile(r"(?<![\w\\])(\*\*?)(?=[^\s*])(.+?)(?<=[^\s*])\1(?![\w*])")
_INLINE_LITERAL = re.compile(r"(``.+?``|`[^`]+`)")


def _escape_text(line: str) -> str:
  """`|` and stray `*` escaped, outside inline code; a backtick span followed by a letter
  ("`Array`s") separated from it by an escaped space."""
  pieces = _INLINE_LITERAL.split(line)
  for index in range(0, len(pieces), 2):
    text = pieces[index].replace("|", "\\|")
    spans = _EMPHASIS.split(text)
    # split with two groups: text, marker, body, marker... keep emphasis, escape the rest
    kept = []
    for position, piece in enumerate(spans):
      kind = position % 3
      if kind == 0:
        kept.append(piece.replace("*", "\\*"))
      elif kind == 1:
        kept.append(piece)
      else:
        kept.append(piece + spans[position - 1])
    pieces[index] = "".join(kept)
    if index + 1 < len(pieces) and index + 2 < len(pieces) and pieces[index + 2][:1].isalnum():
      pieces[index + 2] = "\\ " + pieces[index + 2]
  return "".join(pieces)


def plain_text_docstring(lines: list[str]) -> list[str]:
  """Indented blocks that follow text become literal blocks, or lists when they start with a
  bullet; text is escaped (see above)."""
  out: list[str] = []
  protect = None  # the indent whose deeper lines belong to a literal block, directive or field
  created = False  # whether the protected block is a literal block made here
  text_indent: int | None = None  # of the last line of ordinary text
  content_indent = 0  # where that line's text starts (after a bullet)
  list_parent: int | None = None  # the indent of the text an indented list belongs to
  for line in lines:
    stripped = line.strip()
    indent = len(line) - len(line.lstrip())
    if not stripped:
      out.append(line)
      continue
    if protect is not None:
      if indent > protect:
        out.append(line)
        continue
      if created and out[-1].strip():
        out.append("")
      protect, created = None, False
    if list_parent is not None and indent <= list_parent:
      if out[-1].strip():
        out.append("")  # the list ends
      list_parent = None
    if text_indent is not None and indent > content_indent:
      if out[-1].strip():
        out.append("")
      bullet = _BULLET.match(stripped)
      if bullet and list_parent is None:
        out.append(line[:indent] + _escape_text(stripped))
        list_parent, text_indent, content_indent = text_indent, indent, indent + bullet.end()
        continue
      out += [" " * text_indent + "::", "", line]
      protect, created, text_indent = text_indent, True, None
      continue
    field = _FIELD.match(stripped)
    if stripped.startswith((".. ", ">>>")) or field or stripped.endswith("::"):
      out.append(line[:indent] + field.group(0) + _escape_text(stripped[field.end():])
                 if field else line)
      protect, text_indent = indent, None
      if stripped.startswith(">>>"):
        protect = indent - 1  # a doctest block runs to the next blank line
      continue
    bullet = _BULLET.match(stripped)
    out.append(line[:indent] + _escape_text(stripped))
    text_indent, content_indent = indent, indent + (bullet.end() if bullet else 0)
  return out


def _process_docstring(app: Any, what: str, name: str, obj: Any, options: Any,
                       lines: list[str]) -> None:
  lines[:] = plain_text_docstring(lines)


def generate(app: Any) -> None:
  import optimkit
  from optimkit import registry

  root = pathlib.Path(app.srcdir)
  readme = (root.parent / "README.md").read_text()
  parity = parity_rows(readme)
  written: set[pathlib.Path] = set()
  for name in registry.names():
    _write(root, f"api/optimizers/{name}.md", optimizer_page(registry.get(name), parity), written)
  _write(root, "api/optimizers/index.md", optimizers_index(registry), written)
  for family in _families(registry):
    # "family-": a hyphen is in no Python name, so no optimizer's page can clash with it.
    _write(root, f"api/optimizers/family-{family}.md", family_page(registry, family), written)
  by_module = public_transform_names()
  _write(root, "api/primitives.md", primitives_page(by_module), written)
  _write(root, "api/states.md", states_page(by_module), written)
  _write(root, "_fragments/optax_table.md", optax_table(registry), written)
  _write(root, "_fragments/torch_table.md", torch_table(registry), written)
  _write(root, "_fragments/parity_table.md", parity_table(readme), written)
  _remove_stale(root, written)
  del optimkit


def _submodules_directive() -> type:
  from docutils import nodes
  from docutils.statemachine import StringList
  from sphinx.util.docutils import SphinxDirective

  class Submodules(SphinxDirective):
    """`.. optimkit-submodules:: optimkit.comparison`: `automodule` (members, undocumented
    ones too) for every public module of the package, found when the site is built, so that a
    module added to the package is on the page without editing it."""

    required_arguments = 1

    def run(self) -> list[Any]:
      package = importlib.import_module(self.arguments[0])
      text = []
      for info in sorted(pkgutil.iter_modules(package.__path__), key=lambda m: m.name):
        if not info.name.startswith("_"):
          text += [f".. automodule:: {package.__name__}.{info.name}", "   :members:",
                   "   :undoc-members:", ""]
      container = nodes.container()
      self.state.nested_parse(StringList(text, source=self.get_source_info()[0]),
                              self.content_offset, container)
      return container.children

  return Submodules


def setup(app: Any) -> dict[str, Any]:
  app.add_directive("optimkit-submodules", _submodules_directive())
  app.connect("builder-inited", generate)
  # After napoleon has turned Args: and Returns: into fields and before sphinx_autodoc_typehints
  # adds its markup: same priority, and conf.py lists this extension between the two.
  app.connect("autodoc-process-docstring", _process_docstring)
  return {"parallel_read_safe": True, "parallel_write_safe": True}
