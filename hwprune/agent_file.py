"""The device agent as one file, for a device that cannot install hwprune (a Jetson's Python 3.6-3.8, a Pi):
`hwprune agent --write-file hwprune_agent.py`, copy it over, run `python3 hwprune_agent.py`.

Stitched from the very modules `python3 -m hwprune.agent` runs (errors, provenance, timing, agent_args,
agent), so the
device times with the same code as a local run; nothing is kept twice in the source tree.
"""

from __future__ import annotations

import ast
from pathlib import Path

from hwprune import __version__

MODULES = ("errors", "provenance", "timing", "agent_args", "agent")
_HERE = Path(__file__).resolve().parent


def standalone_source() -> str:
    """The agent and what it imports from hwprune, as one Python >= 3.8 script."""
    parts = [f'"""hwprune {__version__} device agent, one file (written by `hwprune agent --write-file`).\n\n'
             'Run: python3 THIS_FILE --help. Needs Python >= 3.8, numpy and onnxruntime."""\n',
             "from __future__ import annotations\n", f"__version__ = {__version__!r}\n"]
    defined: dict[str, str] = {}
    for name in MODULES:
        text = (_HERE / f"{name}.py").read_text()
        lines = text.splitlines()
        drop: set[int] = set()
        for i, node in enumerate(ast.parse(text).body):
            span = range(node.lineno - 1, node.end_lineno)
            if (isinstance(node, ast.ImportFrom) and (node.module == "__future__" or node.module == "hwprune"
                                                       or (node.module or "").startswith("hwprune."))
                    or (i == 0 and isinstance(node, ast.Expr))  # the module docstring
                    or (isinstance(node, ast.If) and "__main__" in ast.unparse(node.test))):
                drop.update(span)
                continue
            for own in _top_level_names(node):
                if defined.setdefault(own, name) != name:
                    raise RuntimeError(f"{name}.py and {defined[own]}.py both define {own}: rename one")
        parts.append(f"# ---- hwprune/{name}.py " + "-" * 80 + "\n")
        parts.append("\n".join(line for n, line in enumerate(lines) if n not in drop).strip() + "\n\n")
    parts.append('\nif __name__ == "__main__":\n    sys.exit(main(prog="python3 " + sys.argv[0]))\n')
    return "\n".join(parts)


def _top_level_names(node: ast.stmt) -> list[str]:
    """Names a module statement binds other than imports (imports of one library may repeat)."""
    if isinstance(node, (ast.FunctionDef, ast.ClassDef)):
        return [node.name]
    if isinstance(node, (ast.Assign, ast.AnnAssign)):
        targets = node.targets if isinstance(node, ast.Assign) else [node.target]
        return [n.id for t in targets for n in ast.walk(t) if isinstance(n, ast.Name)]
    return []
