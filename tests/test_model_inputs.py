"""Running a model on its inputs: an input the model cannot run is refused with the field it came from
(``Task.calibration[2]``, ``Task.profile_inputs[1]``) named, before the model is run or the ids looked up."""
from __future__ import annotations

import pytest
import torch
from torch import nn

import qslm
from qslm.errors import QslmError
from qslm.model_inputs import call_model, inferences_in, inputs_digest, run_inputs
from qslm.tasks.base import Task

VOCAB = 256
IDS = torch.randint(0, VOCAB, (2, 5), generator=torch.Generator().manual_seed(0))


class UserLM(nn.Module):
    """A user's model with an embedding at its input."""

    def __init__(self):
        super().__init__()
        self.emb = nn.Embedding(VOCAB, 8)
        self.head = nn.Linear(8, 4)

    def forward(self, ids):
        return self.head(self.emb(ids)).mean(1)


def search(model, task, tmp_path):
    return qslm.search(model, task, out=tmp_path / "out", progress=False, cache_dir=tmp_path / "cache")


EXPECTED_IDS = f"expected integer token ids below the embedding size {VOCAB}"


@pytest.mark.parametrize("bad, message", [
    (IDS.float(), f"Task.calibration[2]: embedding 'emb' was given float32 values; {EXPECTED_IDS}"),
    (IDS.to(torch.int8), f"Task.calibration[2]: embedding 'emb' was given int8 values; {EXPECTED_IDS}"),
    (IDS + VOCAB, f"Task.calibration[2]: embedding 'emb' was given token id {int(IDS.max()) + VOCAB}; {EXPECTED_IDS}"),
    (IDS - VOCAB, f"Task.calibration[2]: embedding 'emb' was given token id {int(IDS.min()) - VOCAB}; {EXPECTED_IDS}"),
])
def test_calibration_ids_the_embedding_cannot_look_up_are_named(bad, message, tmp_path):
    task = Task(evaluate=lambda m: 0.0, calibration=[IDS, IDS, bad])
    with pytest.raises(QslmError) as raised:
        search(UserLM(), task, tmp_path)
    assert str(raised.value).startswith(message) and "\n" not in str(raised.value)


def test_a_model_on_the_meta_device_is_refused_before_it_runs(tmp_path):
    with torch.device("meta"):
        model = UserLM()
    with pytest.raises(QslmError, match=r"^Task\.calibration\[0\]: cannot run the model, its tensor 'emb\.weight' "
                                        r"is on the meta device .*; expected a model with its weights in memory "
                                        r"\(not on the meta device\)"):
        search(model, Task(evaluate=lambda m: 0.0, calibration=[IDS]), tmp_path)
    with pytest.raises(QslmError, match=r"^Task\.profile_inputs\[0\]: cannot run the model"):
        run_inputs(model, Task(evaluate=lambda m: 0.0, calibration=[IDS], profile_inputs=[IDS]).profiling)


def test_what_the_model_raises_is_named_with_the_input(tmp_path):
    class Picky(nn.Module):
        def __init__(self):
            super().__init__()
            self.linear = nn.Linear(4, 2)

        def forward(self, x):
            if x.shape[-1] != 4:
                raise ValueError(f"want 4 features, got {x.shape[-1]}\nsecond line")
            return self.linear(x)

    good, bad = torch.randn(3, 4), torch.randn(3, 5)
    with pytest.raises(QslmError, match=r"^Task\.calibration\[1\]: the model raised ValueError \(want 4 features, "
                                        r"got 5\); expected an input the model accepts \(a tensor"):
        search(Picky(), Task(evaluate=lambda m: 0.0, calibration=[good, bad]), tmp_path)
    # the profiler runs the profile inputs; float inputs are fine for a model without an embedding
    task = Task(evaluate=lambda m: 0.0, calibration=[good], profile_inputs=[good, good, (bad,)])
    assert run_inputs(Picky(), task.profiling[:2]) == 6
    with pytest.raises(QslmError, match=r"^Task\.profile_inputs\[2\]: the model raised ValueError"):
        run_inputs(Picky(), task.profiling)

    class Interrupted(nn.Module):
        def forward(self, x):
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):  # not an error of the input
        run_inputs(Interrupted(), task.profiling)


def test_quantizer_calibration_and_profile_inputs_are_named_by_their_field(tmp_path):
    task = Task(evaluate=lambda m: 0.0, calibration=[IDS], profile_inputs=[IDS, IDS.float()])
    with pytest.raises(QslmError, match=r"^Task\.profile_inputs\[1\]: embedding 'emb' was given float32"):
        search(UserLM(), task, tmp_path / "profile")
    task = Task(evaluate=lambda m: 0.0, calibration=[IDS], quantizer_calibration=[IDS, IDS, IDS + VOCAB])
    with pytest.raises(QslmError, match=r"^Task\.quantizer_calibration\[2\]: embedding 'emb' was given token id"):
        search(UserLM(), task, tmp_path / "quantizer")


def test_an_input_is_one_argument_positional_arguments_or_keyword_arguments():
    def model(a, b=None):
        return a if b is None else a - b

    wrapped = nn.Module()
    wrapped.forward = model
    x = torch.ones(2, 3)
    assert torch.equal(call_model(wrapped, x), x)
    assert torch.equal(call_model(wrapped, (x, x)), torch.zeros(2, 3))
    assert torch.equal(call_model(wrapped, {"a": x, "b": 2 * x}), -x)
    assert inferences_in({"b": 5, "a": x}) == 2  # rows of the first tensor found
    with pytest.raises(QslmError, match="holds no batched tensor"):
        inferences_in((torch.tensor(3.0),))


def test_the_digest_of_inputs_follows_values_shapes_and_structure():
    x = torch.arange(6.0).reshape(2, 3)
    digest = inputs_digest([x, {"b": x, "a": 1}])
    assert digest == inputs_digest([x.clone(), {"a": 1, "b": x.clone()}])
    assert len({digest, inputs_digest([x.reshape(3, 2), {"b": x, "a": 1}]), inputs_digest([x, {"b": x, "a": 2}]),
                inputs_digest([(x,), {"b": x, "a": 1}]), inputs_digest([x.double(), {"b": x, "a": 1}])}) == 5
