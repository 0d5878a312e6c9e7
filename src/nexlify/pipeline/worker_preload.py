"""Imported once by the fork server that starts worker processes (``backends.worker_context``).

Loading torch, numba and the trainer here means each worker starts with them in memory instead
of importing them again (seconds of CPU per worker). That includes ``torch._dynamo``: torch's
optimizers import it the first time one is built, about two seconds of CPU in every worker.

Importing this module also binds the fork server to the pipeline process: when the pipeline
dies, even by SIGKILL, the fork server dies, and with it every worker (each worker binds itself
to the fork server).
"""

from __future__ import annotations

import torch._dynamo  # noqa: F401  (what building a torch optimizer imports)

import nexlify.pipeline.runs  # noqa: F401  (the imports are the point)
from nexlify.system.lifetime import bind_to_parent

bind_to_parent()
