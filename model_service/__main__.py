"""`python -m model_service`: see `model_service.cli`."""

import sys

from model_service.cli import main

sys.exit(main())
