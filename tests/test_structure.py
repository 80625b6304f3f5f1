"""The shape of the code (../shared/ARCHITECTURE.md): stages chain through files, never through imports.

- A stage script (scripts/*.py) imports no other stage and no orchestrator, not even inside a function: the
  orchestrators pipeline.py and run_demo.py import stages, so that would be a cycle (issue 32: finetune_gemma's and
  convert's main() imported pipeline for the auto-export; the launchers now call `pipeline.py train|export`).
- scripts/ftg/ imports no stage and no orchestrator.
- The importers (ftg/chat_formats.py, chat_message.py, formats_*.py) import nothing of training: no torch, transformers, peft, trl, accelerate,
  bitsandbytes, datasets, llama.cpp, and none of ftg's model, training or GGUF modules.
- Only ftg/llama_runtime.py imports the llama.cpp runtime package.
- bench/ imports no private (_underscore) name from the project's modules.
- Every file under scripts/ is under 500 lines and every public top-level function under 60, unless the line just
  above its def (or its decorator) is a comment with "long:" that says why (issue 32: a file reads as one concern).

Imports inside functions count as much as those at the top of a file.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

from ftg.config import PROJECT_ROOT

SCRIPTS = PROJECT_ROOT / "scripts"
ORCHESTRATORS = {"pipeline", "run_demo"}
STAGES = {p.stem for p in SCRIPTS.glob("*.py")} - ORCHESTRATORS
TRAINING_PACKAGES = {"torch", "transformers", "peft", "trl", "accelerate", "bitsandbytes", "datasets", "llama_cpp"}
TRAINING_FTG = {"ftg.models", "ftg.training_data", "ftg.device_plan", "ftg.runs", "ftg.chunked_loss",
                "ftg.cpu_embeddings", "ftg.gguf_make", "ftg.gguf_run", "ftg.gguf_check", "ftg.llama_runtime",
                "ftg.gemma3n_export", "ftg.turn_rows"}
RUNTIME_PACKAGES = {"llama_cpp", "llama_cpp_py_sync", "xllamacpp"}
RUNTIME_MODULE = SCRIPTS / "ftg" / "llama_runtime.py"
IMPORTERS = {"chat_formats.py", "chat_message.py"}
"""With ftg/formats_*.py: the chat export parsers."""


def imports(source: str) -> list[tuple[str, str, list[str]]]:
    """(module, outermost function it is imported in or '', imported names) for every import in `source`."""
    found = []

    def visit(node, function: str) -> None:
        for child in ast.iter_child_nodes(node):
            inner = function or (child.name if isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef)) else "")
            if isinstance(child, ast.Import):
                found.extend((alias.name, function, []) for alias in child.names)
            elif isinstance(child, ast.ImportFrom) and child.level == 0 and child.module:
                found.append((child.module, function, [alias.name for alias in child.names]))
            visit(child, inner)

    visit(ast.parse(source), "")
    return found


def problems_of_stage(name: str, source: str) -> list[str]:
    """Why the stage script `name` breaks the rule (empty when it keeps it)."""
    found = []
    for module, function, _ in imports(source):
        top = module.split(".")[0]
        if top in STAGES and top != name:
            found.append(f"{name}.py imports the stage {top}")
        if top in ORCHESTRATORS:
            found.append(f"{name}.py imports the orchestrator {top}")
    return found


def problems_of_shared(path: Path, source: str) -> list[str]:
    found = [f"{path.name} imports {module}" for module, _, _ in imports(source)
             if module.split(".")[0] in STAGES | ORCHESTRATORS]
    if path.name in IMPORTERS or path.name.startswith("formats_"):
        found += [f"the importer {path.name} imports {module}, which belongs to training"
                  for module, _, _ in imports(source)
                  if module.split(".")[0] in TRAINING_PACKAGES or module in TRAINING_FTG]
    return found


def python_files(folder: Path) -> list[Path]:
    return sorted(p for p in folder.rglob("*.py") if "__pycache__" not in p.parts)


@pytest.mark.parametrize("name", sorted(STAGES))
def test_a_stage_imports_no_other_stage(name):
    source = (SCRIPTS / f"{name}.py").read_text(encoding="utf-8")
    assert problems_of_stage(name, source) == []


@pytest.mark.parametrize("path", python_files(SCRIPTS / "ftg"), ids=lambda p: p.name)
def test_shared_code_imports_no_stage_and_importers_nothing_of_training(path):
    assert problems_of_shared(path, path.read_text(encoding="utf-8")) == []


def import_graph(sources: dict[str, str]) -> dict[str, set[str]]:
    """module -> the modules of `sources` it imports (stages and orchestrators by name, shared code as ftg.x)."""
    return {name: {module for module, _, _ in imports(source) if module in sources and module != name}
                   | {f"ftg.{n}" for module, _, names in imports(source) if module == "ftg"
                      for n in names if f"ftg.{n}" in sources}
            for name, source in sources.items()}


def find_cycle(graph: dict[str, set[str]]) -> list[str]:
    """One import cycle as [a, b, ..., a], or [] when the graph has none (depth-first search)."""
    state: dict[str, str] = {}  # "open" while on the current path, "done" after
    path: list[str] = []

    def visit(node: str) -> list[str]:
        state[node] = "open"
        path.append(node)
        for nxt in sorted(graph[node]):
            if state.get(nxt) == "open":
                return path[path.index(nxt):] + [nxt]
            if nxt not in state and (cycle := visit(nxt)):
                return cycle
        state[node] = "done"
        path.pop()
        return []

    for node in sorted(graph):
        if node not in state and (cycle := visit(node)):
            return cycle
    return []


def test_the_modules_under_scripts_import_no_cycle():
    """The structure picture (scripts/*.py and scripts/ftg/*.py, imports inside functions included) is a DAG."""
    sources = {p.stem: p.read_text(encoding="utf-8") for p in SCRIPTS.glob("*.py")}
    sources |= {f"ftg.{p.stem}": p.read_text(encoding="utf-8") for p in python_files(SCRIPTS / "ftg")}
    graph = import_graph(sources)
    assert "convert" in graph["pipeline"] and "ftg.config" in graph["convert"]  # the graph sees real edges
    assert find_cycle(graph) == []
    # The cycle this test was written for: a stage's main() importing pipeline for the auto-export.
    sources["convert"] += "\ndef main():\n    import pipeline\n"
    assert find_cycle(import_graph(sources)) == ["convert", "pipeline", "convert"]


def test_only_the_runtime_module_imports_the_runtime():
    users = [str(p.relative_to(PROJECT_ROOT)) for p in python_files(SCRIPTS) if p != RUNTIME_MODULE
             and any(m.split(".")[0] in RUNTIME_PACKAGES for m, _, _ in imports(p.read_text(encoding="utf-8")))]
    assert users == []


def test_bench_imports_no_private_names():
    private = [(p.name, module, name) for p in python_files(PROJECT_ROOT / "bench")
               for module, _, names in imports(p.read_text(encoding="utf-8"))
               for name in names if name.startswith("_") and module.split(".")[0] in STAGES | ORCHESTRATORS | {"ftg"}]
    assert private == []


def test_the_checks_catch_what_they_are_for():
    """The rules above fail on the imports they forbid (so a passing run means something)."""
    assert problems_of_stage("chat", "import convert\n") == ["chat.py imports the stage convert"]
    assert problems_of_stage("report", "def f():\n    from chat import x\n") == ["report.py imports the stage chat"]
    assert problems_of_stage("convert", "def main():\n    def body():\n        import pipeline\n") == [
        "convert.py imports the orchestrator pipeline"]
    assert problems_of_stage("finetune_gemma", "import run_demo\n") == ["finetune_gemma.py imports the orchestrator run_demo"]
    assert problems_of_shared(SCRIPTS / "ftg" / "files.py", "import merge_lora\n") == ["files.py imports merge_lora"]
    assert problems_of_shared(SCRIPTS / "ftg" / "chat_formats.py", "def f():\n    import torch\n") == [
        "the importer chat_formats.py imports torch, which belongs to training"]
    assert problems_of_shared(SCRIPTS / "ftg" / "formats_html.py", "from ftg.models import x\n") == [
        "the importer formats_html.py imports ftg.models, which belongs to training"]
    assert {"chat", "convert", "report", "finetune_gemma", "merge_lora", "prepare_conversation_data"} <= STAGES


MAX_FILE_LINES = 500
MAX_FUNCTION_LINES = 60


def problems_of_size(name: str, source: str) -> list[str]:
    """Why `source` (the file `name`) is too long: MAX_FILE_LINES lines or more, or a public top-level function of
    MAX_FUNCTION_LINES lines or more (def to its last line) without a "# long: why" comment just above it."""
    lines = source.splitlines()
    found = [f"{name} has {len(lines)} lines (under {MAX_FILE_LINES})"] if len(lines) >= MAX_FILE_LINES else []
    for node in ast.parse(source).body:
        if not isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)) or node.name.startswith("_"):
            continue
        length = node.end_lineno - node.lineno + 1
        first = min([node.lineno] + [decorator.lineno for decorator in node.decorator_list])
        above = lines[first - 2].strip() if first > 1 else ""
        if length >= MAX_FUNCTION_LINES and not (above.startswith("#") and "long:" in above):
            found.append(f"{name}: {node.name}() has {length} lines (under {MAX_FUNCTION_LINES}, or say why above "
                         "it in a '# long: ...' comment)")
    return found


def test_files_and_public_functions_are_short():
    found = [problem for path in python_files(SCRIPTS)
             for problem in problems_of_size(str(path.relative_to(PROJECT_ROOT)), path.read_text(encoding="utf-8"))]
    assert found == []


def test_the_size_check_catches_long_code():
    """The size rule fails on long synthetic sources (so a passing run means something)."""
    body = "    x = 1\n"
    assert problems_of_size("a.py", "def show():\n" + body * 59) == [
        "a.py: show() has 60 lines (under 60, or say why above it in a '# long: ...' comment)"]
    assert problems_of_size("a.py", "def show():\n" + body * 58) == []
    assert problems_of_size("a.py", "def _show():\n" + body * 59) == []
    assert problems_of_size("a.py", "# long: a table\ndef show():\n" + body * 59) == []
    assert problems_of_size("a.py", "# long: a table\n@cache\ndef show():\n" + body * 59) == []
    assert problems_of_size("a.py", "# a table\ndef show():\n" + body * 59) != []
    assert problems_of_size("a.py", "x = 1\n" * 500) == ["a.py has 500 lines (under 500)"]
    assert problems_of_size("a.py", "x = 1\n" * 499) == []
