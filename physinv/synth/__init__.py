"""Ground-truth multi-view data rendered by Mitsuba 3.

* :func:`physinv.synth.scene.synthesize` — the data set (layout in :mod:`physinv.synth.scene`);
  ``physinv synth scene --out DIR`` on the command line, ``physinv synth inspect DIR`` to check one.
* :mod:`physinv.synth.spec` — TOML/JSON scene specs and the built-in 3-object scene.
* :mod:`physinv.synth.sky` — procedural sky + sun maps and the equirectangular convention.
* :mod:`physinv.synth.variant` — ``llvm_ad_rgb`` when a usable libLLVM exists, else ``scalar_rgb``.
"""
