"""The README's ask/tell example runs as printed (it broke once when the scalarizers became passive)."""
import pathlib
import re
import subprocess
import sys

README = pathlib.Path(__file__).resolve().parents[1] / "README.md"


def test_ask_tell_example_runs() -> None:
    text = README.read_text()
    block = re.search(r"## Ask / tell[^\n]*\n\n```python\n(.*?)```", text, re.S)
    assert block, "README lost its ask/tell example"
    p = subprocess.run([sys.executable, "-c", block.group(1)], capture_output=True, text=True, timeout=300)
    assert p.returncode == 0, p.stderr
    best = float(p.stdout.strip().splitlines()[-1])
    assert 5.0 < best < 40.0          # the twin's plasmon energies, eV
