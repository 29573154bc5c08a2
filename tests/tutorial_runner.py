"""Run docs/TUTORIAL.md as a reader would: every ```bash and ```python block in order, in one working folder.

Used by tests/test_tutorial.py (which checks the numbers the tutorial quotes) and by hand to re-measure them:

    PYTHONPATH=src python tests/tutorial_runner.py --data ../shared/data --out /tmp/tutorial_run

Bash blocks run in a fresh ``bash -e`` with ``corrmark`` and ``torchrun`` bound to this interpreter and this checkout,
``REPO``/``DATA`` exported; python blocks run in a fresh interpreter. The first block's ``export REPO=... DATA=...``
line (placeholders) is replaced by the real paths. Returns one record per block: kind, first doc line, output.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
TUTORIAL = REPO / "docs" / "TUTORIAL.md"
BLOCK = re.compile(r"^```(bash|python)\n(.*?)^```", re.S | re.M)


def tutorial_blocks(text: str) -> list[dict]:
    """``[{"kind", "line", "code"}]`` in document order (``line``: 1-based line of the fence)."""
    return [{"kind": match.group(1), "line": text.count("\n", 0, match.start()) + 1, "code": match.group(2)}
            for match in BLOCK.finditer(text)]


def _environment(data: Path) -> dict:
    env = dict(os.environ, REPO=str(REPO), DATA=str(data.resolve()), OMP_NUM_THREADS="1",
               PYTHONPATH=os.pathsep.join(filter(None, [str(REPO / "src"), os.environ.get("PYTHONPATH")])))
    env.pop("CORRMARK_DEVICE", None)
    return env


def _bash_prelude() -> str:
    python = sys.executable
    return (f'corrmark() {{ "{python}" -m corrmark "$@"; }}\n'
            f'torchrun() {{ "{python}" -m torch.distributed.run "$@"; }}\nset -e\n')


def run_tutorial(data: Path, workdir: Path, timeout: float = 900) -> list[dict]:
    """Run every block; the tutorial's own ``mkdir -p tutorial && cd tutorial`` makes ``workdir/tutorial`` the
    folder of every later block. A failing block raises with its output."""
    workdir.mkdir(parents=True, exist_ok=True)
    env, cwd, records = _environment(data), workdir, []
    for block in tutorial_blocks(TUTORIAL.read_text()):
        code = "\n".join(line for line in block["code"].splitlines() if "/path/to" not in line)
        if block["kind"] == "bash":
            command = ["bash", "-c", _bash_prelude() + code]
        else:
            command = [sys.executable, "-c", code]
        done = subprocess.run(command, cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout)
        output = done.stdout + done.stderr
        if done.returncode != 0:
            raise RuntimeError(f"TUTORIAL.md block at line {block['line']} failed ({done.returncode}):\n{output}")
        records.append(dict(block, output=output))
        if (workdir / "tutorial").is_dir():
            cwd = workdir / "tutorial"
    return records


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", default=str(REPO.parent / "shared" / "data"))
    parser.add_argument("--out", required=True)
    args = parser.parse_args()
    records = run_tutorial(Path(args.data), Path(args.out))
    for record in records:
        print(f"--- {record['kind']} block at line {record['line']}\n{record['output']}")
    (Path(args.out) / "tutorial_outputs.json").write_text(json.dumps(records, indent=1))


if __name__ == "__main__":
    main()
