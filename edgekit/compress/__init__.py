"""Compression before export: distillation and pruning stages driven by a TOML recipe.

    from edgekit.compress import load_recipe, run_recipe, render_stage_table
    handle2, stages = run_recipe(handle, load_recipe("recipe.toml"), train, validation)

See docs/COMPRESS.md. Importing this package loads the standard library and numpy only; torch,
torch-pruning and transformers are imported by the stages that use them.
"""

from __future__ import annotations

from .recipe import Recipe, Stage, load_recipe, recipe_from_dict
from .pipeline import render_stage_table, run_recipe

__all__ = ["Recipe", "Stage", "load_recipe", "recipe_from_dict", "run_recipe", "render_stage_table"]
