#!/usr/bin/env python
"""Convert NIH Pancreas-CT (TCIA DICOM series + NIfTI labels) to a NIfTI Decathlon folder.

Usage: ``python scripts/prepare_pancreas_ct.py --source_dir SRC --out_dir OUT [options]``; ``--help`` lists the options
(the arguments of :func:`crln_monai.data.convert.prepare_pancreas_ct`).
"""

from __future__ import annotations

from collections.abc import Sequence

from crln_monai.data.convert.cli import converter_main


def main(argv: Sequence[str] | None = None) -> None:
    """Run the converter with command-line arguments (``argv``; default: ``sys.argv[1:]``); prints the output folder.
    An option the converter does not take is refused before anything runs."""
    converter_main("pancreas_ct", argv)


if __name__ == "__main__":
    main()
