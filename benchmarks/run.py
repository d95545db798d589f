"""Run every benchmark, one after the other: ``make bench`` (or ``.venv/bin/python benchmarks/run.py``).

Each script prints its own table, measuring ours against its baseline in the same process; run a
script on its own for its options (``--help``).
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

SCRIPTS = ("bench_parse.py", "bench_guide.py", "bench_diffusers.py")


def main() -> int:
    here = Path(__file__).resolve().parent
    status = 0
    for name in SCRIPTS:
        print(f"\n=== {name} ===", flush=True)
        status |= subprocess.call([sys.executable, str(here / name)])
    return status


if __name__ == "__main__":
    sys.exit(main())
