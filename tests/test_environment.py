"""A report names what it was measured on."""
from __future__ import annotations

import numpy as np
import torch

from qslm.environment import environment


def test_environment_names_the_libraries_and_kernels():
    found = environment()
    assert found["torch"].split("+")[0] == torch.__version__.split("+")[0] and found["numpy"] == np.__version__
    assert found["torch_cpu_capability"] == torch.backends.cpu.get_cpu_capability()
    assert found["torch_threads"] == torch.get_num_threads() and found["python"].count(".") == 2
