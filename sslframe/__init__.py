"""sslframe: self-supervised pretraining of vision models, from a laptop CPU to SLURM clusters.

Importing the package imports the components that declare what config validation checks: their
config schemas (trunks, heads, methods: ``sslframe.registry.registered_schemas``) and valid names
(trunk architectures, data sources, optimizers, schedules: ``sslframe.registry.choices``).
"""

__version__ = "0.1.0"

# The Python API (see sslframe/api.py and docs/python_api.md).
# Each of these registers its schemas or choices when imported.
from sslframe import methods  # noqa: F401
from sslframe.api import compose, load_trunk, train
from sslframe.data import sources  # noqa: F401
from sslframe.models import heads, trunks  # noqa: F401
from sslframe.optim import build, schedules  # noqa: F401

__all__ = ["__version__", "compose", "load_trunk", "train"]
