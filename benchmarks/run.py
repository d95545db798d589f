"""Run every benchmark, one after the other: ``make bench`` (or ``.venv/bin/python benchmarks/run.py``).

Each script prints its own table, measuring ours against its baseline in the same process; run a
script on its own for its options (``--help``).
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

SCRIPTS = ("bench_parse.py", "bench_guide.py", "bench_diffusers.py", "bench_families.py", "bench_cli.py", "bench_faithfulness.py")


def main() -> int:
    here = Path(__file__).resolve().parent
    failed = []
    for name in SCRIPTS:
        print(f"\n=== {name} ===", flush=True)
        code = subprocess.call([sys.executable, str(here / name)])
        if code:
            failed.append(f"{name} (exit {code})")
    if failed:  # say which benchmark failed, not only that one did
        print(f"\nbenchmarks that failed: {', '.join(failed)}; run one alone with "
              f"{Path(sys.executable).name} benchmarks/NAME.py", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
