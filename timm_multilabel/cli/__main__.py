"""``python -m timm_multilabel.cli COMMAND ...`` (what ``accelerate launch -m`` runs)."""
import sys

from . import main

sys.exit(main())
