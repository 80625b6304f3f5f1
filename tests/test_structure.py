"""The shape of the code (../shared/ARCHITECTURE.md): stages chain through files, never through imports.

- A stage script (scripts/*.py) imports no other stage. The orchestrators pipeline.py and run_demo.py may import
  stages; a stage may import `pipeline` only inside its main(), for the auto-export that its command line offers.
- scripts/ftg/ imports no stage and no orchestrator.
- The importers (ftg/chat_formats.py, chat_message.py, formats_*.py) import nothing of training: no torch, transformers, peft, trl, accelerate,
  bitsandbytes, datasets, llama.cpp, and none of ftg's model, training or GGUF modules.
- Only ftg/llama_runtime.py imports the llama.cpp runtime package.
- bench/ imports no private (_underscore) name from the project's modules.

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
        if top in ORCHESTRATORS and not (top == "pipeline" and function == "main"):
            found.append(f"{name}.py imports {top} outside main()")
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
    assert problems_of_stage("convert", "def main():\n    def body():\n        import pipeline\n") == []
    assert problems_of_stage("convert", "def run():\n    import pipeline\n") == ["convert.py imports pipeline outside main()"]
    assert problems_of_shared(SCRIPTS / "ftg" / "files.py", "import merge_lora\n") == ["files.py imports merge_lora"]
    assert problems_of_shared(SCRIPTS / "ftg" / "chat_formats.py", "def f():\n    import torch\n") == [
        "the importer chat_formats.py imports torch, which belongs to training"]
    assert problems_of_shared(SCRIPTS / "ftg" / "formats_html.py", "from ftg.models import x\n") == [
        "the importer formats_html.py imports ftg.models, which belongs to training"]
    assert {"chat", "convert", "report", "finetune_gemma", "merge_lora", "prepare_conversation_data"} <= STAGES
