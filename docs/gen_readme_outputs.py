"""Regenerate the outputs shown in README.md by running the commands shown there.

A README block of shell commands followed by the marker line

    <!-- output of the commands above (docs/gen_readme_outputs.py) -->

and a fenced block gets that block replaced by what the commands print on
standard output, run with bash in a fresh temporary directory with this
checkout's ``.venv/bin`` first on PATH. A marker may name files to copy back
into the repository: ``<!-- output ...; copy out.png to docs/example.png -->``.
So the README shows what the code does today, on this machine (wall times and
ports are whatever this run had).

    .venv/bin/python docs/gen_readme_outputs.py [--only WORD]    # or: make docs
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
README = ROOT / "README.md"
BLOCK = re.compile(
    r"```sh\n(?P<commands>(?:(?!```)[^\n]*\n)+?)```\n\n"
    r"(?P<marker><!-- output of the commands above \(docs/gen_readme_outputs\.py\)(?P<copies>[^>]*)-->)\n"
    r"```text\n(?P<output>.*?)```\n",
    re.DOTALL,
)
COPY = re.compile(r"copy (\S+) to (\S+)")


def run(commands: str, copies: str) -> str:
    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}",
           "COLUMNS": "80", "TERM": "dumb"}
    env.pop("NOTIFY_SOCKET", None)
    with tempfile.TemporaryDirectory(prefix="gossip-readme-") as tmp:
        proc = subprocess.run(["bash", "-euo", "pipefail", "-c", commands], cwd=tmp, env=env, capture_output=True,
                              text=True, timeout=900)
        if proc.returncode != 0:
            raise SystemExit(f"README commands failed ({proc.returncode}):\n{commands}\n--- stdout\n{proc.stdout}"
                             f"\n--- stderr\n{proc.stderr[-3000:]}")
        for src, dst in COPY.findall(copies):
            shutil.copyfile(Path(tmp) / src, ROOT / dst)
            print(f"  copied {src} to {dst}", file=sys.stderr)
    lines = [line.rstrip() for line in proc.stdout.splitlines()]
    return "\n".join(lines).strip("\n") + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--only", help="regenerate only blocks whose commands contain this word")
    args = parser.parse_args()
    text = README.read_text()
    out, pos, n = [], 0, 0
    for m in BLOCK.finditer(text):
        out.append(text[pos:m.start("output")])
        if args.only and args.only not in m["commands"]:
            out.append(m["output"])
        else:
            print(f"running: {m['commands'].splitlines()[0]} ...", file=sys.stderr)
            out.append(run(m["commands"], m["copies"]))
            n += 1
        pos = m.end("output")
    out.append(text[pos:])
    README.write_text("".join(out))
    print(f"regenerated {n} output block(s) in {README.relative_to(ROOT)}", file=sys.stderr)


if __name__ == "__main__":
    main()
