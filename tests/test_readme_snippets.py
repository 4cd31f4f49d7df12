"""The README's Python snippets against the code: every `import` in them resolves, and every call
of a dcjax function or class they make (`module.function(...)`, `Class(...)`) passes arguments
its signature accepts. A 2026-12-07 audit found a snippet importing a module from a path it had
left and another calling `rded.distill` with arguments it had dropped; this test would have
failed on both. What the snippets compute is not run (they need weights, data, models in scope)."""

import ast
import importlib
import inspect
import pathlib
import re

import pytest

README = pathlib.Path(__file__).resolve().parent.parent / "README.md"


def snippets(text: str) -> list[tuple[int, str]]:
  """(first line number, code) of every ```python block."""
  out = []
  for m in re.finditer(r"^```python\n(.*?)^```", text, re.M | re.S):
    out.append((text[:m.start()].count("\n") + 2, m.group(1)))
  return out


def _optional_absent(name: str) -> bool:
  """A package outside dcjax and its dependencies that this environment lacks (torch, in a
  snippet that converts a torch file): its import is not checked. dcjax's must resolve."""
  if name.split(".")[0] == "dcjax":
    return False
  try:
    importlib.import_module(name)
    return False
  except ModuleNotFoundError:
    return True


def imported_names(tree: ast.AST) -> dict[str, object]:
  """name -> module or object, for every import in the snippet (importing it for real)."""
  names = {}
  for node in ast.walk(tree):
    if isinstance(node, ast.Import):
      for a in node.names:
        if _optional_absent(a.name):
          continue
        module = importlib.import_module(a.name)
        if a.asname:
          names[a.asname] = module
        else:
          names[a.name.split(".")[0]] = importlib.import_module(a.name.split(".")[0])
    elif isinstance(node, ast.ImportFrom):
      if _optional_absent(node.module):
        continue
      module = importlib.import_module(node.module)
      for a in node.names:
        if hasattr(module, a.name):
          names[a.asname or a.name] = getattr(module, a.name)
        else:  # a submodule: `from dcjax.data import torch_import`
          names[a.asname or a.name] = importlib.import_module(f"{node.module}.{a.name}")
  return names


def resolve(func: ast.expr, names: dict[str, object]):
  """The object a call's `a.b.c` names, when `a` was imported by the snippet; else None."""
  parts = []
  while isinstance(func, ast.Attribute):
    parts.append(func.attr)
    func = func.value
  if not isinstance(func, ast.Name) or func.id not in names:
    return None
  obj = names[func.id]
  for p in reversed(parts):
    obj = getattr(obj, p)  # AttributeError: the README names what is not there
  return obj


def dcjax_calls(code: str):
  """(line, text, callable, n positional, keyword names) of each call of a dcjax callable."""
  tree = ast.parse(code)
  names = imported_names(tree)
  for node in ast.walk(tree):
    if not isinstance(node, ast.Call):
      continue
    obj = resolve(node.func, names)
    if obj is None or not getattr(obj, "__module__", "").startswith("dcjax"):
      continue
    if any(isinstance(a, ast.Starred) for a in node.args) or any(
        k.arg is None for k in node.keywords):
      continue  # *args / **kwargs: nothing to check statically
    yield (node.lineno, ast.unparse(node.func), obj, len(node.args),
           [k.arg for k in node.keywords])


def test_the_readme_has_python_snippets():
  assert len(snippets(README.read_text())) >= 5


@pytest.mark.parametrize("start,code", snippets(README.read_text()),
                         ids=lambda v: f"line{v}" if isinstance(v, int) else "")
def test_a_readme_snippet_imports_and_calls_what_the_code_has(start, code):
  checked = 0
  for line, text, obj, n, keywords in dcjax_calls(code):
    try:
      sig = inspect.signature(obj)
    except (TypeError, ValueError):
      continue
    try:
      sig.bind(*range(n), **dict.fromkeys(keywords))
    except TypeError as e:
      pytest.fail(f"README.md:{start + line - 1}: {text}(...) does not fit {text}{sig}: {e}")
    checked += 1
  assert checked or "dcjax" not in code or "import" not in code, (
      f"README.md:{start}: a dcjax snippet with no call this test could check")


def test_the_checker_catches_a_dropped_argument_and_a_moved_module():
  """The two mistakes the audit found, in miniature: the checker must fail on each."""
  with pytest.raises(ModuleNotFoundError):
    list(dcjax_calls("from dcjax import no_such_module\n"))
  code = ("from dcjax import rded\n"
          "rded.distill(src, key, obs, v, ipc=10, k=2, candidates_per_class=3)")
  (_, _, obj, n, kw), = list(dcjax_calls(code))
  with pytest.raises(TypeError):
    inspect.signature(obj).bind(*range(n), **dict.fromkeys(kw))


def _resolve_dotted(name: str):
  """`dcjax.a.b` -> the module or attribute it names (the longest importable prefix, then
  attributes); raises if any part is missing."""
  parts = name.split(".")
  for i in range(len(parts), 0, -1):
    try:
      obj = importlib.import_module(".".join(parts[:i]))
    except ModuleNotFoundError:
      continue
    for p in parts[i:]:
      obj = getattr(obj, p)
    return obj
  raise ModuleNotFoundError(name)


def test_the_readme_names_only_dcjax_objects_and_repo_files_that_exist():
  text = README.read_text()
  names = sorted(set(re.findall(r"`(dcjax(?:\.\w+)+)", text)))
  assert len(names) >= 10
  missing = []
  for n in names:
    try:
      _resolve_dotted(n)
    except (ModuleNotFoundError, AttributeError):
      missing.append(n)
  paths = sorted(set(re.findall(
      r"\b((?:experiments|scripts|configs|tests|dcjax)/[\w/]+\.(?:py|sh))\b", text)))
  assert len(paths) >= 10
  missing += [p for p in paths if not (README.parent / p).exists()]
  assert not missing, f"README.md names what the repository does not have: {missing}"
  with pytest.raises(AttributeError):
    _resolve_dotted("dcjax.rded.no_such_function")


def heading_anchors(text: str) -> list[str]:
  """GitHub's anchor of every Markdown heading outside code blocks: lower case, punctuation but
  '-' and '_' dropped, spaces to '-'."""
  text = re.sub(r"^```.*?^```", "", text, flags=re.M | re.S)
  return [re.sub(r"[^\w\- ]", "", m.group(1).strip().lower()).replace(" ", "-")
          for m in re.finditer(r"^#+ (.+)$", text, re.M)]


def test_the_readme_contents_list_every_section_and_link_to_it():
  text = README.read_text(encoding="utf-8")
  contents = text[text.index("Contents:"):text.index("\n\n## ")]
  links = re.findall(r"\]\(#([^)]+)\)", contents)
  anchors = heading_anchors(text)
  assert set(links) <= set(anchors), sorted(set(links) - set(anchors))
  sections = heading_anchors("\n".join(
      line for line in text.splitlines() if re.match(r"^#{2,3} ", line)))
  assert links == [a for a in anchors if a in sections]  # every ## / ### heading, in order
  assert heading_anchors("## Outputs (`--workdir`)\n```\n# not a heading\n```") == [
      "outputs---workdir"]
