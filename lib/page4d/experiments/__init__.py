"""Experiments built on the trainer: the paired mask-supervision ablation (`ablation`, its statistics
`ablation_stats` and across-run report `ablation_report`), pretraining the tiny backbone (`pretrain`),
parameter sweeps over a notebook (`sweep`), and notebook 02's quickly trained head (`trained_heads`)."""
