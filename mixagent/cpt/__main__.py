"""``python -m mixagent.cpt CONFIG.json``: one CPT run from a JSON config (for ``torchrun``)."""

from __future__ import annotations

import json
import logging
import sys
from pathlib import Path

from mixagent.config import validate_config
from mixagent.cpt.config import CPTConfig


def main(argv: list[str]) -> int:
    if len(argv) != 1:
        sys.stderr.write("usage: python -m mixagent.cpt CONFIG.json\n")
        return 2
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    path = Path(argv[0])
    cfg = validate_config(CPTConfig, json.loads(path.read_text(encoding="utf-8")), source=str(path))
    from mixagent.cpt.run import run_cpt

    run_cpt(cfg)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
