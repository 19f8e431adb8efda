"""The benchmarks: code outside the library that measures it, each run from the
repository root as ``python -m benchmarks.NAME`` (``--help`` for its options); they use
the library's public API only. Grouped by the question each answers:

How fast, and how much memory?
    ``run`` (``make bench``: every ratio of docs/performance.md, and the sections below
    in fresh processes), ``real_size`` (a torchvision ResNet at 224x224 on the CPU),
    ``gpu`` (the same on a GPU), ``explain_cost`` (one explanation as a share of the
    fit), ``summary_passes`` (head passes and host synchronisations per region).

How does the region index compare and scale?
    ``index_quality`` (the index against the per-seed summary), ``index_scale``
    (throughput, driver memory and summary time against N, in-process and on Ray).

Are the heat maps faithful (the paper's protocol and the field's metrics)?
    ``evaluate`` (``make evaluate``: Average Drop / Increase on unseen images, with
    ``protocol``: the protocol and its CAM baselines), ``fidelity`` (ROAD, deletion /
    insertion, blur fill, on the same images), ``quantus_eval`` (Quantus' checks),
    ``photo_heatmaps`` (a trained real-size ResNet), ``retrieval_confidence`` (why RI
    gets less Average Increase).

Are the regions pure and stable?
    ``purity_curve`` (purity against |Q|), ``stability`` (across seeds, |Q| and noise).

Does a summary find a planted shortcut?
    ``shortcut`` (``make shortcut``), with ``domino_mixture`` (Domino's error-aware
    mixture, the baseline).

Smooth heads and other models (tangent boundaries)?
    ``smooth_heads`` (smooth VGG heads and a small ViT), ``tangent_curve`` (why tangent
    cells fall short of 99% held-out purity), ``smooth_224`` (smooth torchvision models
    at 224x224), ``torchvision_matrix`` (every torchvision family: where it is split,
    the verdict on its head; prints the README's table).

What does a user see?
    ``report_screens`` (screenshots of the reports).

Shared code: ``harness`` (command lines, the demo's model and data, results as JSON and
markdown, child processes, head passes counted from outside).
"""
