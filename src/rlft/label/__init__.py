"""`rlft label`: a web app where people compare two completions of a prompt and say which is better.

``store`` (SQLite), ``auth`` (hashes and tokens), ``agreement`` (Krippendorff's alpha and
friends), ``sources`` (candidates files and model samples) and ``export`` need only the standard
library; ``app`` is the Flask app (the ``label`` extra), imported only when a server starts.
"""
