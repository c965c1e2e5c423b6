"""Training: a tiny run per task writes a loadable model folder; an interrupted run resumes to
exactly the weights of an uninterrupted one."""
from __future__ import annotations

import dataclasses
import json
import math
import pickle
import re

import pytest
import torch
from safetensors.torch import load_file

from qslm.checkpoint import TOKENIZER_FILE, WEIGHTS_FILE, load_model, save_model
from qslm.errors import QslmError
from qslm.models.zoo import CONFIG_FILE, build_model
from qslm.tasks.datasets import sst2
from qslm.tasks.evaluation import classification_logits
from qslm.train import (
    Trainer,
    TrainOptions,
    distillation_loss,
    lm_training_text,
    lr_at,
    sst2_split,
    tokenizer_corpus,
    train,
)
from qslm.train_state import STATE_FILE

TASKS = {"wikitext2": {"n_embd": 16, "n_layer": 1, "ctx_len": 16},
         "sst2": {"n_embd": 16, "n_layer": 1, "ctx_len": 24}}


def options(task: str, out, data_dir, **changes) -> TrainOptions:
    fields = dict(arch="spikegpt", task=task, out=out, steps=5, batch_size=4, warmup=2, vocab_size=300,
                  model_overrides=dict(TASKS[task]), checkpoint_every=2, eval_every=100,
                  data_dir=str(data_dir), device="cpu")
    return TrainOptions(**{**fields, **changes})


ENCODER = {"n_embd": 16, "n_layer": 1, "n_head": 2, "time_steps": 2, "max_len": 24}


def masked_lm_options(out, data_dir, **changes) -> TrainOptions:
    """The spiking encoder's masked-LM pre-training stage."""
    return options("wikitext2", out, data_dir, **{"arch": "spiking-encoder", "model_overrides": dict(ENCODER),
                                                  **changes})


def weights(folder) -> dict[str, torch.Tensor]:
    return load_file(str(folder / WEIGHTS_FILE))


def interrupt_at(monkeypatch, step: int) -> None:
    """Ctrl-C while step ``step + 1`` is under way: its batch is drawn and its forward pass done."""
    original = Trainer.loss

    def loss(self):
        result = original(self)
        if self.step == step:
            raise KeyboardInterrupt
        return result

    monkeypatch.setattr(Trainer, "loss", loss)


@pytest.mark.slow
@pytest.mark.parametrize("task", ["wikitext2", "sst2"])
def test_tiny_run_writes_a_model_folder(task, small_data_dir, tmp_path):
    out = train(options(task, tmp_path / "model", small_data_dir))
    assert out == tmp_path / "model"
    assert {p.name for p in tmp_path.iterdir()} == {"model"}  # the .partial work folder is gone
    assert {CONFIG_FILE, WEIGHTS_FILE, TOKENIZER_FILE, "training.json"} <= {p.name for p in out.iterdir()}
    config = json.loads((out / CONFIG_FILE).read_text())
    assert config["task"] == ("lm" if task == "wikitext2" else "classification")
    assert config["n_embd"] == 16 and config["n_layer"] == 1
    summary = json.loads((out / "training.json").read_text())
    assert summary["options"]["steps"] == 5
    final = summary["history"][-1]
    assert final["step"] == 5 and ("val_word_ppl" in final or "val_accuracy" in final)
    assert all(torch.isfinite(t).all() for t in weights(out).values())


@pytest.mark.slow
@pytest.mark.parametrize("task,ema_decay", [("wikitext2", 0.0), ("sst2", 0.0), ("sst2", 0.9), ("mlm", 0.0),
                                            ("distill", 0.0)])
def test_interrupted_run_resumes_to_identical_weights(task, ema_decay, small_data_dir, tmp_path, monkeypatch,
                                                      capsys, tiny_classifier):
    def run_options(out, **changes):
        if task == "mlm":
            return masked_lm_options(out, small_data_dir, ema_decay=ema_decay, **changes)
        if task == "distill":
            return options("sst2", out, small_data_dir, teacher=str(tiny_classifier), **changes)
        return options(task, out, small_data_dir, ema_decay=ema_decay, **changes)

    uninterrupted = train(run_options(tmp_path / "straight"))

    out = tmp_path / "resumed"
    with monkeypatch.context() as patch:
        interrupt_at(patch, 3)
        with pytest.raises(QslmError, match="interrupted at step 3; checkpoint saved"):
            train(run_options(out))
    assert not out.exists()
    assert (tmp_path / "resumed.partial" / STATE_FILE).is_file()
    # Volatile options (checkpoint and eval intervals) may change on resume.
    train(run_options(out, checkpoint_every=100))
    assert "resuming from" in capsys.readouterr().out

    expected, got = weights(uninterrupted), weights(out)
    assert got.keys() == expected.keys()
    for name in expected:
        assert torch.equal(got[name], expected[name]), name
    assert (out / TOKENIZER_FILE).read_text() == (uninterrupted / TOKENIZER_FILE).read_text()


def test_resume_refuses_other_options(small_data_dir, tmp_path, monkeypatch):
    out = tmp_path / "model"
    with monkeypatch.context() as patch:
        interrupt_at(patch, 1)
        with pytest.raises(QslmError, match="interrupted"):
            train(options("wikitext2", out, small_data_dir))
    with pytest.raises(QslmError, match="written by different training options; remove .*model.partial"):
        train(options("wikitext2", out, small_data_dir, lr=5e-4))


def test_bad_arch_and_task(small_data_dir, tmp_path):
    with pytest.raises(QslmError, match="unknown arch 'gpt2'"):
        train(options("sst2", tmp_path / "m", small_data_dir, arch="gpt2"))
    with pytest.raises(QslmError, match="unknown task 'mnli'"):
        train(dataclasses.replace(options("sst2", tmp_path / "m", small_data_dir), task="mnli"))


def test_learning_rate_schedule():
    opts = TrainOptions(arch="spikegpt", task="sst2", out="x", steps=110, lr=1e-3, warmup=10)
    assert lr_at(0, opts) == pytest.approx(1e-4)
    assert lr_at(9, opts) == pytest.approx(1e-3)
    assert lr_at(10, opts) == pytest.approx(1e-3)
    assert lr_at(60, opts) == pytest.approx(1e-3 * (0.1 + 0.9 * 0.5))
    assert lr_at(110, opts) == pytest.approx(1e-4)


def test_wikitext_weight_repeats_the_in_domain_text(small_data_dir, tmp_path):
    base = options("wikitext2", tmp_path / "m", small_data_dir)
    line = next(l for l in (small_data_dir / "wikitext-2" / "valid.txt").read_text().splitlines() if len(l) > 40)
    once, thrice = lm_training_text(base), lm_training_text(dataclasses.replace(base, wikitext_weight=3))
    assert once.count(line) == 1 and thrice.count(line) == 3
    brown = (small_data_dir / "brown" / "brown.txt").read_text().splitlines()[5]
    assert once.count(brown) == thrice.count(brown)
    # the tokenizer is trained on the plain mix whatever the weight, so it does not change with it
    assert tokenizer_corpus(base) == tokenizer_corpus(dataclasses.replace(base, wikitext_weight=3))
    assert tokenizer_corpus(base) == tokenizer_corpus(base, sst2_split(base)[0])  # the trainer passes its split
    with pytest.raises(QslmError, match="--wikitext-weight must be a whole number >= 1, got 0"):
        train(dataclasses.replace(base, wikitext_weight=0))


@pytest.mark.slow
def test_classifier_from_a_language_model(tiny_lm, small_data_dir, tmp_path):
    """--init with an LM for sst2 keeps the LM body and tokenizer under a new classification head."""
    out = train(options("sst2", tmp_path / "clf", small_data_dir, init=str(tiny_lm), steps=2,
                        model_overrides={}))
    config = json.loads((out / CONFIG_FILE).read_text())
    assert config["task"] == "classification" and config["n_embd"] == 32
    trained, body = weights(out), weights(tiny_lm)
    assert "classifier.weight" in trained and "head.weight" not in trained
    assert (out / TOKENIZER_FILE).read_text() == (tiny_lm / TOKENIZER_FILE).read_text()
    assert set(body) - {"head.weight"} <= set(trained)
    lm = train(options("wikitext2", tmp_path / "lm", small_data_dir, steps=2))
    staged = train(options("wikitext2", tmp_path / "lm2", small_data_dir, init=str(lm), steps=2, model_overrides={}))
    summary = json.loads((staged / "training.json").read_text())
    assert summary["init_training"] == json.loads((lm / "training.json").read_text())  # provenance kept


@pytest.mark.slow
def test_encoder_masked_lm_pre_training_then_classifier(small_data_dir, tmp_path):
    """The encoder's language-model stage is a masked LM; --init for sst2 keeps all of it but the LM head."""
    mlm = train(masked_lm_options(tmp_path / "mlm", small_data_dir, steps=3))
    config = json.loads((mlm / CONFIG_FILE).read_text())
    assert config["task"] == "mlm" and config["arch"] == "spiking-encoder"
    final = json.loads((mlm / "training.json").read_text())["history"][-1]
    assert final["step"] == 3 and 0 < final["val_mlm_loss"] < 2 * math.log(config["vocab_size"])
    pre_trained = weights(mlm)
    assert pre_trained["lm_head.weight"].shape == (config["vocab_size"], 16)

    fine_tune = Trainer(options("sst2", tmp_path / "clf", small_data_dir, arch="spiking-encoder", init=str(mlm),
                                model_overrides={}))
    state = fine_tune.model.state_dict()
    assert fine_tune.model.config.task == "classification"
    assert "classifier.weight" in state and not any(name.startswith("lm_head") for name in state)
    for name, tensor in pre_trained.items():
        if not name.startswith("lm_head"):
            assert torch.equal(state[name], tensor), name


def test_masked_lm_needs_a_mask_token(small_data_dir, tmp_path, tiny_encoder):
    """A classifier whose tokenizer predates the mask token cannot seed a masked LM."""
    tokenizer = json.loads((tiny_encoder / TOKENIZER_FILE).read_text())
    tokenizer["added_tokens"] = [t for t in tokenizer["added_tokens"] if t["content"] != "<mask>"]
    tokenizer["model"]["vocab"].pop("<mask>")
    old = tmp_path / "old-encoder"
    old.mkdir()
    for name in (CONFIG_FILE, WEIGHTS_FILE):
        (old / name).write_bytes((tiny_encoder / name).read_bytes())
    (old / TOKENIZER_FILE).write_text(json.dumps(tokenizer))
    with pytest.raises(QslmError, match="the tokenizer has no <mask> token"):
        train(masked_lm_options(tmp_path / "mlm", small_data_dir, init=str(old), model_overrides={}))


def test_distillation_loss_is_the_scaled_kl_of_softened_outputs():
    teacher = torch.tensor([[2.0, -1.0], [0.5, 0.5]])
    student = torch.tensor([[0.0, 1.0], [1.0, -1.0]])
    p, q = torch.softmax(teacher / 3, -1), torch.softmax(student / 3, -1)
    expected = 9 * (p * (p.log() - q.log())).sum(-1).mean()
    assert distillation_loss(student, teacher, 3.0) == pytest.approx(float(expected), rel=1e-5)
    assert distillation_loss(teacher, teacher, 3.0) == pytest.approx(0.0, abs=1e-7)


def test_distillation_learns_from_the_teacher_outputs(small_data_dir, tmp_path, tiny_classifier, monkeypatch):
    """The teacher's logits line up with the training examples; at weight 1 the labels play no part."""
    trainer = Trainer(options("sst2", tmp_path / "m", small_data_dir, arch="spiking-encoder",
                              model_overrides=dict(ENCODER), teacher=str(tiny_classifier), distill_weight=1.0))
    teacher = load_model(tiny_classifier)
    train_examples, _ = sst2.split_holdout(sst2.load_sst2("train", small_data_dir))
    assert trainer.teacher_logits.shape == (len(trainer.train_items), 2)
    some = [0, 7, len(train_examples) - 1]
    expected, _ = classification_logits(teacher.model, teacher.tokenizer, [train_examples[i] for i in some])
    assert torch.allclose(trainer.teacher_logits[some], expected, atol=1e-5)

    state = trainer._batch_order_state()
    loss, _ = trainer.loss()
    trainer.rng.setstate(state["python_rng"])
    trainer.epoch_batches = []
    trainer.train_items = [(ids, 1 - label) for ids, label in trainer.train_items]  # every label wrong
    flipped, _ = trainer.loss()
    assert loss.item() == pytest.approx(flipped.item(), rel=1e-6) and loss.item() > 0


@pytest.mark.parametrize("changes, message", [
    ({"distill_weight": 1.5}, "--distill-weight must be a finite number in [0, 1], got 1.5"),
    ({"distill_temperature": 0.0}, "--distill-temperature must be a finite number > 0, got 0.0"),
    ({"teacher": "LM"}, "is a language model; a teacher must be a classifier"),
    ({"task": "wikitext2", "teacher": "CLF"}, "--teacher applies to sst2 training only, not 'wikitext2'"),
])
def test_bad_distillation_options(changes, message, small_data_dir, tmp_path, tiny_lm, tiny_classifier):
    folders = {"LM": str(tiny_lm), "CLF": str(tiny_classifier)}
    changes = {k: folders.get(v, v) if isinstance(v, str) else v for k, v in changes.items()}
    task = changes.pop("task", "sst2")
    with pytest.raises(QslmError, match=re.escape(message)):
        train(options(task, tmp_path / "m", small_data_dir, **{"teacher": str(tiny_classifier), **changes}))


def test_teacher_must_have_the_same_classes(small_data_dir, tmp_path, tiny_classifier):
    three = tmp_path / "three-classes"
    loaded = load_model(tiny_classifier)
    config = dataclasses.replace(loaded.config, num_classes=3)
    save_model(three, build_model(config), loaded.tokenizer)
    with pytest.raises(QslmError, match="has 3 classes, the model being trained 2"):
        train(options("sst2", tmp_path / "m", small_data_dir, teacher=str(three)))


def test_length_weighting_draws_longer_examples_more_often(small_data_dir, tmp_path):
    def mean_words_drawn(alpha: float) -> float:
        trainer = Trainer(options("sst2", tmp_path / f"m{alpha}", small_data_dir, length_weighting=alpha))
        trainer._classification_batch()  # builds one epoch's batch order
        drawn = [i for batch in trainer.epoch_batches for i in batch]
        return sum(len(trainer.train_items[i][0]) for i in drawn) / len(drawn)

    plain, weighted = mean_words_drawn(0.0), mean_words_drawn(1.0)
    assert weighted > 1.15 * plain  # about 1.23 on the small data set; plain order gives about 1.0
    with pytest.raises(QslmError, match="--length-weighting must be a finite number >= 0, got -1"):
        train(options("sst2", tmp_path / "bad", small_data_dir, length_weighting=-1.0))
    with pytest.raises(QslmError, match="--length-weighting applies to sst2 training only, not 'wikitext2'"):
        train(options("wikitext2", tmp_path / "bad", small_data_dir, length_weighting=1.0))
    with pytest.raises(QslmError, match="--wikitext-weight applies to wikitext2 training only, not 'sst2'"):
        train(options("sst2", tmp_path / "bad", small_data_dir, wikitext_weight=3))


def test_ema_writes_the_moving_average_of_the_weights(small_data_dir, tmp_path, monkeypatch):
    decay = 0.6
    snapshots: list[dict[str, torch.Tensor]] = []
    original_step = torch.optim.AdamW.step

    def step_and_record(self, *args, **kwargs):
        result = original_step(self, *args, **kwargs)
        snapshots.append({n: p.detach().clone() for n, p in recorded_model.named_parameters()})
        return result

    original_build = Trainer._build

    def build(self):
        nonlocal recorded_model
        tokenizer, model = original_build(self)
        recorded_model = model
        return tokenizer, model

    recorded_model = None
    monkeypatch.setattr(Trainer, "_build", build)
    monkeypatch.setattr(torch.optim.AdamW, "step", step_and_record)
    out = train(options("sst2", tmp_path / "ema", small_data_dir, ema_decay=decay))
    assert len(snapshots) == 5
    expected = dict(snapshots[0])  # the average starts from the first step's weights
    for snapshot in snapshots[1:]:
        expected = {n: decay * expected[n] + (1 - decay) * snapshot[n] for n in expected}
    written = weights(out)
    for name, value in expected.items():
        torch.testing.assert_close(written[name], value)
    assert not torch.equal(written["classifier.weight"], snapshots[-1]["classifier.weight"])
    with pytest.raises(QslmError, match=r"--ema-decay must be a finite number in \[0, 1\), got 1.0"):
        train(options("sst2", tmp_path / "bad", small_data_dir, ema_decay=1.0))


class CreatesMarker:
    """Unpickling this object creates ``marker``: the shape of a crafted checkpoint that runs code."""

    def __init__(self, marker):
        self.marker = str(marker)

    def __reduce__(self):
        return open, (self.marker, "w")


def test_the_crafted_payload_runs_when_unpickled(tmp_path):
    """The payload the tests below plant is live: unpickling it does create its marker."""
    marker = tmp_path / "ran"
    pickle.loads(pickle.dumps(CreatesMarker(marker))).close()
    assert marker.is_file()


@pytest.mark.parametrize("planted", ["checkpoint.pt", "teacher_logits.pt"])
def test_an_old_pickle_checkpoint_is_refused_unloaded(planted, small_data_dir, tmp_path):
    marker = tmp_path / "code-ran"
    work = tmp_path / "model.partial"
    work.mkdir()
    torch.save(CreatesMarker(marker), work / planted)
    with pytest.raises(QslmError, match=rf"{planted} is a checkpoint of an older qslm version.*"
                                        rf"delete the folder .*model.partial to start over"):
        train(options("sst2", tmp_path / "model", small_data_dir))
    assert not marker.exists()
    assert (work / planted).is_file()  # the user's folder is left for them to delete


def test_a_pickle_in_place_of_the_state_file_is_refused_unloaded(small_data_dir, tmp_path):
    marker = tmp_path / "code-ran"
    work = tmp_path / "model.partial"
    work.mkdir()
    (work / STATE_FILE).write_bytes(pickle.dumps(CreatesMarker(marker)))
    with pytest.raises(QslmError, match=rf"{STATE_FILE} is not a readable safetensors file.*"
                                        rf"delete .*model.partial to start over"):
        train(options("sst2", tmp_path / "model", small_data_dir))
    assert not marker.exists()


def test_corrupt_teacher_logits_are_refused(small_data_dir, tmp_path, tiny_classifier):
    work = tmp_path / "model.partial"
    work.mkdir()
    (work / "teacher_logits.safetensors").write_bytes(b"not safetensors")
    with pytest.raises(QslmError, match="teacher_logits.safetensors is not a readable safetensors file"):
        train(options("sst2", tmp_path / "model", small_data_dir, teacher=str(tiny_classifier)))


@pytest.mark.parametrize("existing", ["model", "model.partial"])
def test_out_naming_a_file_is_refused_before_any_work(existing, small_data_dir, tmp_path):
    (tmp_path / existing).write_text("a file the user keeps")
    with pytest.raises(QslmError, match=rf"--out .*model: .*{existing} is a file, not a folder"):
        train(options("sst2", tmp_path / "model", small_data_dir))
    assert sorted(p.name for p in tmp_path.iterdir()) == [existing]
    assert (tmp_path / existing).read_text() == "a file the user keeps"
