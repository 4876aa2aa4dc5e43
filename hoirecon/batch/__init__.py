"""`hoirecon batch`: the pipeline over many clips, locally (worker processes) or on a Ray cluster.

Modules: ``clips`` (which clips, manifest, output names), ``task`` (one clip = one ``hoirecon
run`` process), ``child`` (that process's entry), ``executors`` (local processes, Ray tasks),
``report`` (batch.jsonl, batch.csv, the terminal table), ``index`` (DIR/index.html), ``batch``
(``BatchConfig`` and the command's entry ``run_batch``).
"""

from hoirecon.batch.batch import BatchConfig, run_batch

__all__ = ["BatchConfig", "run_batch"]
