"""Training methods on the runtime, one module per recipe (``runtime/recipe.py`` says what a recipe is)."""
