"""pytest plugin for the nbval step: execute cells with store_history=True, as Jupyter and
papermill do, so that a trailing `;` suppresses a cell's result under nbval too.

nbval >= 0.10 sends cells with store_history=False, and IPython then looks for the `;` in the
*previous* history entry (nbval issue #194, IPython issue #14162): every `fig.savefig(...);`
style line would show up as an unexpected text/plain output. Load with
`pytest -p tests.nbval_semicolon --nbval ...` (scripts/run_notebook_tests.sh does).
"""
from nbval.kernel import RunningKernel


def _execute_cell_input(self, cell_input, allow_stdin=None):
    return self.kc.execute(cell_input, allow_stdin=allow_stdin, store_history=True)


RunningKernel.execute_cell_input = _execute_cell_input
