#!/usr/bin/env python
"""Convert the LA data set (UA-MT h5 files or the challenge's NRRD files) to a NIfTI Decathlon folder.

Usage: ``python scripts/prepare_la.py --source_dir SRC --out_dir OUT [options]``; ``--help`` lists the options
(the arguments of :func:`crln_monai.data.convert.prepare_la`).
"""

from __future__ import annotations

from collections.abc import Sequence

import fire

from crln_monai.data.convert import prepare_la


def main(argv: Sequence[str] | None = None) -> None:
    """Run the converter with command-line arguments (``argv``; default: ``sys.argv[1:]``); prints the output folder."""
    command = None if argv is None else list(argv)
    fire.Fire(prepare_la, command=command, name="prepare_la", serialize=str)


if __name__ == "__main__":
    main()
