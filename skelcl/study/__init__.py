"""Studies built on skelcl.train: experiment grids (`skelcl experiment`), the demo (`skelcl demo`), and
their reports and plots. This package imports skelcl.train; nothing in skelcl.train imports it."""
