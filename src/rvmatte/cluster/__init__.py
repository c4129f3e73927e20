"""Scale out on Ray: many videos, and long videos in parts, across a cluster.

::

    from rvmatte.cluster import convert_many
    res = convert_many(["a.mp4", "b.mp4", "clips/"], "out/", alpha="out/", cluster="auto",
                       gpus_per_task=1, manifest="out/manifest.jsonl")
    res = convert_many(["long.mp4"], "out/", cluster="auto", split_seconds=60)

Each video is a Ray task with its resources declared; a task whose worker dies is retried and
resumes from its checkpoint; a bad clip is a failed line in the manifest while the rest
finish; a re-run skips finished outputs and resumes partial ones. A long video can be split
into parts converted on several workers, each with a warm-up (:mod:`rvmatte.cluster.split`),
and joined exactly. Ray is the optional extra ``rvmatte[cluster]``; without a cluster
(``cluster=None``) the same batch runs here, one clip after another. See docs/CLUSTER.md.
"""

from .driver import ClusterProgress, ManyResult, convert_many
from .runner import ClusterRunner
from .split import DEFAULT_WARMUP, SEAM_BOUND, seam_note

__all__ = ["convert_many", "ClusterProgress", "ManyResult", "ClusterRunner", "DEFAULT_WARMUP",
           "SEAM_BOUND", "seam_note"]
