"""Task utilities registered in ``TASK_UTILS``: assigners, match costs, samplers, coders,
prior generators. Importing a subpackage registers its modules and re-exports its ``__all__``;
adding a subpackage is one more line here."""
from .assigners import *  # noqa: F401,F403
from .coders import *  # noqa: F401,F403
from .prior_generators import *  # noqa: F401,F403
from .roi_extractors import *  # noqa: F401,F403
from .samplers import *  # noqa: F401,F403
