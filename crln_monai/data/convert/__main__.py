"""``python -m crln_monai.data.convert <la|pancreas_ct|brats19> --source_dir ... --out_dir ... [options]``."""

from __future__ import annotations

import sys

from .cli import CONVERTERS, console_main


def main() -> None:
    if len(sys.argv) < 2 or sys.argv[1] not in CONVERTERS:
        raise SystemExit(
            f"usage: python -m crln_monai.data.convert {{{','.join(CONVERTERS)}}} --source_dir SRC --out_dir OUT "
            "[options]; add --help after the data set for its options."
        )
    console_main(sys.argv[1], sys.argv[2:])


if __name__ == "__main__":
    main()
