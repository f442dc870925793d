"""The old name of advlab.viz.widgets (the ipywidgets explorers), kept so that
`from advlab import widgets`, `import advlab.widgets` and `advlab.widgets.eps_explorer` work.

It is an alias, not a copy: importing it puts the advlab.viz.widgets module itself under this
name, so reading or monkeypatching advlab.widgets.NAME reads or patches the real module.
"""
import sys

from advlab.viz import widgets as _widgets

sys.modules[__name__] = _widgets
