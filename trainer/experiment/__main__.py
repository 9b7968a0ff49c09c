"""`python -m trainer.experiment` runs `grape-experiment`."""

import sys

from trainer.experiment.cli import main

sys.exit(main())
