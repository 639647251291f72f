"""Build recipes: code that runs once to make the assets ``rlft`` ships, kept out of the runtime package.

    recipes.tasks     the bundled task snapshots, scraped from their raw sources
                      (``python -m recipes.tasks [--task NAME]``)
    recipes.pretrain  the bundled base model ``rlft-base``, pretrained on local text
                      (``python -m recipes.pretrain [key=value ...]``)

Run them from the repository root with the project's environment (``.venv/bin/python -m ...``).
The recipes import ``rlft``; ``rlft`` never imports them: what it needs to load the assets
(task definitions, snapshot paths, the bundled model's directory) lives in the package.
"""
