"""sslframe: self-supervised pretraining of vision models, from a laptop CPU to SLURM clusters.

Importing the package imports the components whose names config validation checks (trunk
architectures, data sources, optimizers, schedules: see ``sslframe.registry.choices``).
"""

__version__ = "0.1.0"

from sslframe.data import sources  # noqa: F401  (each registers its choices)
from sslframe.models import trunks  # noqa: F401
from sslframe.optim import build, schedules  # noqa: F401
