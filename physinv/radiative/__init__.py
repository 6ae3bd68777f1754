"""physinv.radiative — grey P1 radiative transfer in 2D and the recovery of a density map.

Modules:

* :mod:`~physinv.radiative.p1` — the presentation's splitting solver (implicit exchange step with
  the fixed point on T, asymptotic-preserving finite volumes), batched (B, Ny, Nx), differentiable;
  ``simulate``, ``p1_step``, ``P1Params``, ``BC``; deviations from the slides in its docstring.
* :mod:`~physinv.radiative.expr` — the safe expression parser of the configuration files.
* :mod:`~physinv.radiative.configfile` — the presentation's key–value configuration format,
  CSV data frame and ``.npz`` outputs (``physinv radiative simulate``).
* :mod:`~physinv.radiative.data` — créneaux and random-field data sets, resumable shards
  (``physinv radiative dataset``).
* :mod:`~physinv.radiative.learn` — CNN baselines, U-Net and V-Net (MONAI), training through
  ``physinv.core.train.fit``, evaluation (``train``, ``eval``).
* :mod:`~physinv.radiative.invert` — optimisation of ρ through the differentiable solver
  (``invert``).
* :mod:`~physinv.radiative.demo` — the ``physinv demo`` section.
"""
