"""``python -m lit_transfer demo``: a local page to draw a digit and watch both stages' networks and the frozen
features they share (Gradio; the ``demo`` extra). ``serve.py`` starts it, ``app.py`` is the page, ``inference.py``
runs the networks, ``runs.py`` finds checkpoints and reads their runs' logs, ``views.py``/``pictures.py`` draw."""
