"""The trainer: VGGT / PAGE-4D on multi-view RGB-D scenes or any clip, with optional mask supervision.

Seeded and deterministic on CPU; one process, or `torchrun` with DistributedDataParallel. Split as VGGT's
`train_utils`, one concept per module (read `loop.train` first):

    config.py       TrainConfig (every knob, defined once; the CLI is generated from it), TRAINS, PRECISIONS
    schedule.py     lr_at: linear warm-up, then a cosine (a pure function of the step)
    trainables.py   the model a run builds, what trains (middle blocks, requires_grad), what got gradients
    clips.py        the training clips, their seeded order split across ranks, the mask-GT check
    distributed.py  rank / world, the device, DDP wrapping, the few collectives, torchrun's process group
    fast_path.py    mask terms only: stop at the mask head, cache its input per clip
    state.py        TrainRun: what one call of `train` works with
    checkpoint.py   RNG states, save / latest / prune, resume checks and restore
    summary.py      summary.json (configured vs actually trained tensors) and the progress lines
    digest.py       weights_digest: equal digests mean bit-identical weights
    loop.py         train(): set up, one step per clip, finish
    interrupts.py   Ctrl-C, SIGTERM and a dead torchrun launcher all stop with a checkpoint
    cli.py          python -m page4d.train (any input page4d.predict reads; options from TrainConfig)

    python -m page4d.train --scene DIR --out outputs/run1 --arm bce --steps 300 [--resume]
    python -m page4d.train --input clip/ --gt masks/ --out outputs/clip --trains mask_head
"""

from page4d.train.checkpoint import latest_checkpoint, prune_checkpoints, schedule_counters
from page4d.train.cli import build_parser, main
from page4d.train.clips import ClipOrder, clip_for_step, mask_gt_check, training_clips
from page4d.train.config import IMAGE_SIZE, NO_GEOMETRY, PRECISIONS, TRAINS, TRAINS_ALIASES, TrainConfig
from page4d.train.digest import weights_digest
from page4d.train.distributed import resolve_device
from page4d.train.fast_path import FeatureCache, mask_logits_from_features
from page4d.train.loop import train
from page4d.train.schedule import lr_at
from page4d.train.summary import summarize_history
from page4d.train.trainables import TrainedTensors, build_training_model, middle_blocks, set_trainable

__all__ = [
    "TrainConfig",
    "TRAINS",
    "TRAINS_ALIASES",
    "PRECISIONS",
    "IMAGE_SIZE",
    "NO_GEOMETRY",
    "train",
    "build_training_model",
    "set_trainable",
    "middle_blocks",
    "TrainedTensors",
    "lr_at",
    "ClipOrder",
    "clip_for_step",
    "training_clips",
    "mask_gt_check",
    "FeatureCache",
    "mask_logits_from_features",
    "latest_checkpoint",
    "prune_checkpoints",
    "schedule_counters",
    "summarize_history",
    "resolve_device",
    "weights_digest",
    "build_parser",
    "main",
]
