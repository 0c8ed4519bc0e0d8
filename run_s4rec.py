#!/usr/bin/env python
"""Train and evaluate S4Rec (or any plugin / RecBole sequential model). See ``--help`` and README.md."""
import sys

from s4rec_recbole.runner import main

if __name__ == "__main__":
    sys.exit(main())
