"""skelcl: snippet-level contrastive pretraining for skeleton-based temporal action localization."""

import os

__version__ = "0.1.0"

# OpenMP threads that wait passively (sleep) instead of spinning between parallel regions: on a shared,
# oversubscribed CPU a spinning thread burns the time slice its partner needs (a demo-size backbone step
# took 3.5-5.2x longer with libgomp's default spin at load 6 on 2 cores). Read by libgomp when torch is
# first imported, so it holds only if skelcl is imported first (the skelcl command is); a value the user
# set (OMP_WAIT_POLICY=active, ...) is kept, and SKELCL_OMP_WAIT=default leaves libgomp's default alone.
if os.environ.get("SKELCL_OMP_WAIT", "passive") != "default":
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
