"""``python -m lit_transfer demo``: a local page to draw a digit and watch both stages' networks and the frozen
features they share, and to teach those features new symbols (Gradio; the ``demo`` extra). ``serve.py`` starts it,
``app.py`` is the page, ``drawing.py`` its drawing pad, ``inference.py`` runs the networks, ``runs.py`` finds
checkpoints and reads their runs' logs, ``views.py`` and ``pictures.py`` write and draw what the page shows,
``teach_tab.py`` is the Teach tab and ``teach.py`` its training."""
