"""The lstm cell's step on its own: its backward step against central differences, its memory,
and torch's nn.LSTMCell."""

import pytest
from stepcheck import check_against_torch, check_owns_its_memory, check_step_back

from bptt.cells import make_cell

OPTIONS = [{}] + ([{"activation": "relu"}, {"activation": "identity"}] if "lstm" == "elman" else [])


@pytest.mark.parametrize("options", OPTIONS, ids=str)
@pytest.mark.parametrize("seed", [0, 1])
def test_step_back_is_the_vjp_of_step(options, seed):
    check_step_back(make_cell("lstm", 4, 5, **options), seed)


@pytest.mark.parametrize("options", OPTIONS, ids=str)
def test_step_back_owns_its_memory(options):
    check_owns_its_memory(make_cell("lstm", 4, 5, **options))


def test_step_equals_torch():
    torch = pytest.importorskip("torch")
    check_against_torch(make_cell("lstm", 4, 5), torch.nn.LSTMCell(4, 5).double())
