"""The Jordan cell's step on its own (context of the outputs, optional decay): its backward step
against central differences, and its memory. (torch has no Jordan network.)"""

import pytest
from stepcheck import check_owns_its_memory, check_step_back

from bptt.cells import make_cell


@pytest.mark.parametrize("options", [{}, {"output_size": 3, "context_decay": 0.5}, {"out_activation": "tanh"}], ids=str)
def test_step_back_is_the_vjp_of_step(options):
    check_step_back(make_cell("jordan", 4, 5, **options))
    check_owns_its_memory(make_cell("jordan", 4, 5, **options))
