"""Train a spike-driven model from scratch (or from an initial model) and write a model folder.

    qslm train --arch spikegpt --task wikitext2 --out runs/spikegpt-wt2 --steps 4000

Task ``wikitext2`` trains a language model on the text stream: next-token for SpikeGPT, masked tokens
(BERT-style) for the bidirectional spiking encoder, whose masked LM is a pre-training stage for
``--task sst2 --init``.

Seeded; checkpoints every ``checkpoint_every`` steps (and on Ctrl-C) to ``OUT.partial/state.safetensors``
(see ``train_state``: no pickle); re-running the same command resumes from there. The finished model folder appears at OUT only at the end.
"""
from __future__ import annotations

import dataclasses
import functools
import json
import math
import random
import signal
import time
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn
from torch.optim.swa_utils import AveragedModel, get_ema_multi_avg_fn
from tqdm import tqdm

from .checkpoint import TOKENIZER_FILE, load_model, save_model
from .data.batching import classification_batches, encode_examples
from .data.masked_lm import line_chunks, masked_batch
from .data.paths import resolve_data_dir
from .data.text import load_text
from .data.tokenizer import load_tokenizer, pad_id, train_tokenizer
from .errors import QslmError
from .jsonfile import read_json_file
from .models.zoo import ARCHITECTURES, LANGUAGE_MODEL_TASK, build_model, evaluation_task
from .tasks.datasets import sst2, wikitext
from .tasks.evaluation import (classification_logits, evaluate_classification, evaluate_lm, masked_lm_loss,
                               max_input_len)
from .train_options import TrainOptions
from .train_state import (
    STATE_FILE,
    TrainingState,
    read_state,
    read_tensors,
    refuse_legacy_files,
    temporary_sibling,
    write_state,
    write_tensors,
)

TRAINING_FILE = "training.json"  # the training summary written beside the model
TEACHER_LOGITS_FILE = "teacher_logits.safetensors"  # kept in the work folder so a resumed run need not recompute them
LM_VALIDATION_CHARS = 20000  # of the held-out WikiText-2 text, validated on by language-model training


def head_task(arch: str, task: str) -> str:
    """The config ``task`` (the model's head) that training ``arch`` on ``task`` needs."""
    return "classification" if task == "sst2" else LANGUAGE_MODEL_TASK[arch]


def lm_training_text(options: TrainOptions) -> str:
    """Brown (or the named corpora) + WikiText-2 train when present + valid minus its held-out tail."""
    root = resolve_data_dir(options.data_dir)
    corpora = options.corpora or [str(root / "brown" / "brown.txt")]
    parts = [load_text(path) for path in corpora]
    in_domain = []
    if wikitext.has_split("train", options.data_dir):
        in_domain.append(wikitext.load_wikitext("train", options.data_dir))
    in_domain.append(wikitext.split_lines(wikitext.load_wikitext("valid", options.data_dir))[0])
    return "\n".join(parts + in_domain * options.wikitext_weight)


def sst2_split(options: TrainOptions) -> tuple[list[sst2.Example], list[sst2.Example]]:
    """SST-2 train as (training examples, held-out sentences)."""
    return sst2.split_holdout(sst2.load_sst2("train", options.data_dir))


def tokenizer_corpus(options: TrainOptions, sst2_training: list[sst2.Example] | None = None) -> list[str]:
    """Text the vocabulary is trained on; ``sst2_training`` saves recomputing the split when known."""
    lm = lm_training_text(dataclasses.replace(options, wikitext_weight=1)).splitlines()
    # Held-out sentences stay unseen, even by the vocabulary.
    training = sst2_training if sst2_training is not None else sst2_split(options)[0]
    return lm + [ex.sentence for ex in training]


def _read_json(path: Path) -> dict | None:
    return read_json_file(path) if path.is_file() else None


def lr_at(step: int, options: TrainOptions) -> float:
    if step < options.warmup:
        return options.lr * (step + 1) / options.warmup
    progress = (step - options.warmup) / max(1, options.steps - options.warmup)
    return options.lr * (0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * progress)))


def distillation_loss(student: torch.Tensor, teacher: torch.Tensor, temperature: float) -> torch.Tensor:
    """T^2 * KL(teacher || student) of the temperature-softened distributions (Hinton et al.): the T^2
    keeps its gradients on the scale of the label loss whatever the temperature."""
    return temperature ** 2 * F.kl_div(F.log_softmax(student / temperature, dim=-1),
                                       F.log_softmax(teacher / temperature, dim=-1), log_target=True,
                                       reduction="batchmean")


class Trainer:
    def __init__(self, options: TrainOptions):
        self.options = options
        options.validate()  # again: the options may have been changed since they were made
        self.work = Path(str(options.out) + ".partial")
        for path, role in ((Path(options.out), "model folder to write"), (self.work, "work folder")):
            if path.exists() and not path.is_dir():
                raise QslmError(f"--out {options.out}: {path} is a file, not a folder; expected a {role} "
                                f"(or nothing there yet)")
        if self.work.is_dir():
            refuse_legacy_files(self.work)
        self.work.mkdir(parents=True, exist_ok=True)
        saved = self._saved_state()  # read and checked before the slow setup, applied after it
        self.device = torch.device(options.device)
        torch.manual_seed(options.seed)
        self.rng = random.Random(options.seed)
        self.init_training: dict | None = None  # the --init model's training summary, kept for provenance
        self.tokenizer, self.model = self._build()
        self.optimizer = torch.optim.AdamW(self.model.parameters(), lr=options.lr,
                                           weight_decay=options.weight_decay, betas=(0.9, 0.99))
        self.ema = (AveragedModel(self.model, multi_avg_fn=get_ema_multi_avg_fn(options.ema_decay))
                    if options.ema_decay else None)
        self.step = 0
        self.history: list[dict] = []
        self.seconds = 0.0
        self._prepare_data()
        if saved is not None:
            self._resume(saved)

    @functools.cached_property
    def sst2_split(self) -> tuple[list[sst2.Example], list[sst2.Example]]:
        return sst2_split(self.options)  # ~2 s: computed once for the vocabulary and the data

    def _build(self):
        options = self.options
        tokenizer_path = self.work / TOKENIZER_FILE
        if options.init:
            loaded = load_model(options.init)
            self.init_training = _read_json(loaded.path / TRAINING_FILE)
            tokenizer = loaded.tokenizer
            if options.arch != loaded.config.arch:
                raise QslmError(f"--init model is arch {loaded.config.arch!r}, not {options.arch!r}")
            overrides = dict(options.model_overrides)
            if hasattr(loaded.config, "task"):  # e.g. an LM body under a new classification head
                overrides.setdefault("task", head_task(options.arch, options.task))
            config = dataclasses.replace(loaded.config, **overrides)
            model = build_model(config)
            # Reuse every tensor whose name and shape match (e.g. an LM body under a classifier).
            own = model.state_dict()
            reused = {k: v for k, v in loaded.model.state_dict().items() if k in own and own[k].shape == v.shape}
            model.load_state_dict(reused, strict=False)
        else:
            if tokenizer_path.is_file():
                tokenizer = load_tokenizer(tokenizer_path)
            else:
                tokenizer = train_tokenizer(tokenizer_corpus(options, self.sst2_split[0]), options.vocab_size)
            config_cls, _ = ARCHITECTURES[options.arch]
            fields = {"vocab_size": tokenizer.get_vocab_size(), **options.model_overrides}
            if "task" in {f.name for f in dataclasses.fields(config_cls)}:
                fields.setdefault("task", head_task(options.arch, options.task))
            config = config_cls(**fields)
            model = build_model(config)
        tokenizer.save(str(tokenizer_path))
        return tokenizer, model.to(self.device)

    def _prepare_data(self) -> None:
        options = self.options
        if self.masked_lm:
            max_len = self.model.config.max_len
            self.train_chunks = line_chunks(self.tokenizer, lm_training_text(options), max_len)
            self.val_chunks = line_chunks(
                self.tokenizer, wikitext.calibration_text(options.data_dir)[:LM_VALIDATION_CHARS], max_len)
            if not self.train_chunks or not self.val_chunks:
                raise QslmError(f"no text lines of at least a few tokens to train or validate the masked LM on "
                                f"(data folder {resolve_data_dir(options.data_dir)})")
        elif options.task == "wikitext2":
            self.train_ids = torch.tensor(self.tokenizer.encode(lm_training_text(options)).ids, dtype=torch.long)
            self.val_text = wikitext.calibration_text(options.data_dir)[:LM_VALIDATION_CHARS]
        else:
            train, held_out = self.sst2_split
            self.train_items = encode_examples(self.tokenizer, train, max_input_len(self.model))
            self.train_weights = [len(e.sentence.split()) ** options.length_weighting for e in train]
            self.val_examples = held_out
            self.epoch_batches = []
            self.teacher_logits = self._teacher_logits(train) if options.teacher is not None else None

    def _teacher_logits(self, examples: list[sst2.Example]) -> torch.Tensor:
        """The teacher's logits for every training example, in order (computed once, kept for resuming)."""
        path = self.work / TEACHER_LOGITS_FILE
        if path.is_file():
            tensors, _ = read_tensors(path, self.work)
            logits = tensors.get("logits")
            if logits is None or logits.shape[0] != len(examples):
                raise QslmError(f"{path} does not hold the teacher logits of the {len(examples):,} training "
                                f"examples; delete {self.work} to start over")
            return logits
        teacher = load_model(self.options.teacher, self.device)
        if evaluation_task(teacher.config, teacher.path) != "text-classification":
            raise QslmError(f"--teacher {self.options.teacher} is a language model; a teacher must be a classifier")
        if teacher.config.num_classes != self.model.config.num_classes:
            raise QslmError(f"--teacher {self.options.teacher} has {teacher.config.num_classes} classes, "
                            f"the model being trained {self.model.config.num_classes}")
        print(f"teacher {teacher.path}: scoring {len(examples):,} training examples")
        logits, _ = classification_logits(teacher.model, teacher.tokenizer, examples, batch_size=256, progress=True)
        write_tensors(path, {"logits": logits})
        return logits

    def _saved_state(self) -> TrainingState | None:
        path = self.work / STATE_FILE
        if not path.is_file():
            return None
        state = read_state(path, self.work)
        if state.options != self._options_fingerprint():
            raise QslmError(f"{path} was written by different training options; remove {self.work} to start over")
        return state

    def _resume(self, state: TrainingState) -> None:
        path = self.work / STATE_FILE
        if (state.ema is None) != (self.ema is None):
            raise QslmError(f"{path} does not match the moving-average setting; remove {self.work} to start over")
        try:
            self.model.load_state_dict(state.model)
            self.optimizer.load_state_dict(state.optimizer)
            if self.ema is not None:
                self.ema.load_state_dict(state.ema)
        except (RuntimeError, KeyError, ValueError) as err:
            raise QslmError(f"{path} does not match the model being trained ({err}); "
                            f"remove {self.work} to start over") from None
        self.step, self.history, self.seconds = state.step, state.history, state.seconds
        self.rng.setstate(state.python_rng)
        torch.set_rng_state(state.torch_rng)
        self.epoch_batches = state.epoch_batches
        print(f"resuming from {path} at step {self.step}")

    def _options_fingerprint(self) -> str:
        fingerprint = dataclasses.asdict(self.options)
        for volatile in ("out", "checkpoint_every", "eval_every", "data_dir", "device"):
            fingerprint.pop(volatile)
        return json.dumps(fingerprint, sort_keys=True, default=str)

    def _batch_order_state(self) -> dict:
        """What decides the coming batches: random generators and the rest of the current epoch."""
        return {"python_rng": self.rng.getstate(), "torch_rng": torch.get_rng_state(),
                "epoch_batches": list(getattr(self, "epoch_batches", []))}

    def save_checkpoint(self, batch_order: dict | None = None) -> None:
        order = batch_order or self._batch_order_state()
        write_state(self.work / STATE_FILE, TrainingState(
            model=self.model.state_dict(), optimizer=self.optimizer.state_dict(),
            ema=self.ema.state_dict() if self.ema is not None else None, step=self.step, history=self.history,
            seconds=self.seconds, options=self._options_fingerprint(), python_rng=order["python_rng"],
            torch_rng=order["torch_rng"], epoch_batches=order["epoch_batches"]))

    def _lm_batch(self) -> tuple[torch.Tensor, torch.Tensor]:
        ctx = self.model.config.ctx_len
        starts = [self.rng.randrange(0, len(self.train_ids) - ctx - 1) for _ in range(self.options.batch_size)]
        chunk = torch.stack([self.train_ids[s:s + ctx + 1] for s in starts]).to(self.device)
        return chunk[:, :-1], chunk[:, 1:]

    def _masked_lm_batch(self) -> tuple[torch.Tensor, ...]:
        chunks = [self.train_chunks[self.rng.randrange(len(self.train_chunks))]
                  for _ in range(self.options.batch_size)]
        return tuple(t.to(self.device) for t in masked_batch(chunks, self.tokenizer))

    def _classification_batch(self):
        if not self.epoch_batches:
            order = list(range(len(self.train_items)))
            if self.options.length_weighting:
                order = self.rng.choices(order, weights=self.train_weights, k=len(order))
            else:
                self.rng.shuffle(order)
            bs = self.options.batch_size
            self.epoch_batches = [order[i:i + bs] for i in range(0, len(order), bs)]
        indices = self.epoch_batches.pop()
        (ids, mask, labels), = classification_batches([self.train_items[i] for i in indices], len(indices),
                                                     pad_id(self.tokenizer))
        teacher = self.teacher_logits[indices] if self.teacher_logits is not None else None
        return ids.to(self.device), mask.to(self.device), labels.to(self.device), teacher

    @property
    def masked_lm(self) -> bool:
        return getattr(self.model.config, "task", None) == "mlm"

    def loss(self) -> tuple[torch.Tensor, int]:
        if self.masked_lm:
            inputs, mask, predict_at, targets = self._masked_lm_batch()
            return F.cross_entropy(self.model(inputs, mask, predict_at), targets), int(mask.sum())
        if self.options.task == "wikitext2":
            inputs, targets = self._lm_batch()
            logits = self.model(inputs)
            return F.cross_entropy(logits.flatten(0, 1), targets.flatten()), targets.numel()
        ids, mask, labels, teacher = self._classification_batch()
        logits = self.model(ids, mask)
        loss = F.cross_entropy(logits, labels)
        if teacher is not None:
            loss = ((1 - self.options.distill_weight) * loss
                    + self.options.distill_weight * distillation_loss(logits, teacher.to(self.device),
                                                                      self.options.distill_temperature))
        return loss, int(mask.sum())

    @property
    def result_model(self) -> nn.Module:
        """The weights that are validated and written: the moving average when one is kept."""
        return self.ema.module if self.ema is not None else self.model

    def validate(self) -> dict:
        model = self.result_model
        model.eval()
        if self.masked_lm:
            metric = {"val_mlm_loss": round(masked_lm_loss(model, self.tokenizer, self.val_chunks), 4)}
        elif self.options.task == "wikitext2":
            result = evaluate_lm(model, self.tokenizer, self.val_text, "calibration")
            metric = {"val_word_ppl": round(result.perplexity, 2)}
        else:
            result = evaluate_classification(model, self.tokenizer, self.val_examples, "calibration")
            metric = {"val_accuracy": round(result.accuracy, 4)}
        self.model.train()
        return metric

    def run(self) -> Path:
        options = self.options
        self.model.train()
        interrupted = False

        def on_sigterm(*_):
            raise KeyboardInterrupt

        previous = signal.signal(signal.SIGTERM, on_sigterm)
        bar = tqdm(total=options.steps, initial=self.step, desc="train", unit="step")
        unfinished_step_order = None
        unfinished_step_buffers: dict[str, torch.Tensor] = {}
        try:
            while self.step < options.steps:
                started = time.perf_counter()
                # An interrupt usually lands mid-step, after this step's batch was drawn; the checkpoint
                # must then hold the batch order from the step's start, or a resumed run skips a batch.
                unfinished_step_order = self._batch_order_state()
                # Its forward pass also moves BatchNorm running statistics; keep theirs from the step's start.
                unfinished_step_buffers = {name: b.clone() for name, b in self.model.named_buffers()}
                for group in self.optimizer.param_groups:
                    group["lr"] = lr_at(self.step, options)
                loss, n_tokens = self.loss()
                self.optimizer.zero_grad(set_to_none=True)
                loss.backward()
                torch.nn.utils.clip_grad_norm_(self.model.parameters(), 1.0)
                self.optimizer.step()
                if self.ema is not None:
                    self.ema.update_parameters(self.model)
                self.step += 1
                unfinished_step_order, unfinished_step_buffers = None, {}
                elapsed = time.perf_counter() - started
                self.seconds += elapsed
                bar.update(1)
                bar.set_postfix(loss=f"{loss.item():.3f}", tok_s=f"{n_tokens / elapsed:.0f}")
                record = {"step": self.step, "loss": round(loss.item(), 4)}
                if self.step % options.eval_every == 0 or self.step == options.steps:
                    record.update(self.validate())
                    bar.write(json.dumps(record))
                if self.step % 50 == 0 or len(record) > 2:  # every 50 steps and every validation
                    self.history.append(record)
                if self.step % options.checkpoint_every == 0:
                    self.save_checkpoint()
        except KeyboardInterrupt:
            interrupted = True
        finally:
            bar.close()
            signal.signal(signal.SIGTERM, previous)
        if interrupted:
            buffers = dict(self.model.named_buffers())
            with torch.no_grad():
                for name, saved in unfinished_step_buffers.items():
                    buffers[name].copy_(saved)
            self.save_checkpoint(unfinished_step_order)
            raise QslmError(f"training interrupted at step {self.step}; checkpoint saved in {self.work}, "
                            f"re-run the same command to resume")
        summary = {"options": json.loads(json.dumps(dataclasses.asdict(options), default=str)),
                   "train_seconds": round(self.seconds, 1),
                   "parameters": sum(p.numel() for p in self.model.parameters()),
                   "history": self.history}
        if self.init_training is not None:
            summary["init_training"] = self.init_training
        model = self.result_model.eval()
        save_model(options.out, model.cpu(), self.tokenizer,
                   extra_files={TRAINING_FILE: json.dumps(summary, indent=2) + "\n"})
        for name in (STATE_FILE, TOKENIZER_FILE, TEACHER_LOGITS_FILE):
            (self.work / name).unlink(missing_ok=True)
            temporary_sibling(self.work / name).unlink(missing_ok=True)  # left by a run killed mid-write
        self.work.rmdir()
        return Path(options.out)


def train(options: TrainOptions) -> Path:
    return Trainer(options).run()
