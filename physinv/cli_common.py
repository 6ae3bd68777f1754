"""Options shared by every sub-command (typer ``Annotated`` aliases), so flags read the same everywhere."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer

Device = Annotated[str, typer.Option("--device", help="auto | cpu | cuda (auto picks CUDA when present)")]
Seed = Annotated[int, typer.Option("--seed", help="random seed")]
OptionalSeed = Annotated[Optional[int], typer.Option("--seed", help="random seed")]  # None: the configuration's seed
Quiet = Annotated[bool, typer.Option("--quiet", help="no progress bar")]
Out = Annotated[Path, typer.Option("--out", help="output folder")]
Steps = Annotated[Optional[int], typer.Option("--steps", help="optimisation steps (stop at whichever of --steps/--max-minutes comes first)")]
MaxMinutes = Annotated[Optional[float], typer.Option("--max-minutes", help="wall-clock budget in minutes; the result so far is kept")]
ConfigFile = Annotated[Optional[Path], typer.Option("--config", help="TOML file with the command's options; flags override it")]
