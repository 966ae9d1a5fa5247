"""The file spark-submit runs: the same ``main`` as the ``consentgate`` command."""

import sys

from transforms.cli import main

if __name__ == "__main__":
    sys.exit(main())
