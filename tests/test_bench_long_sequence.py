"""`python -m page4d.bench long_sequence` at smoke-test sizes: structure, and fewer kept layers never
cost more memory."""

from __future__ import annotations

import json

import torch
from page4d.bench import QUICK
from page4d.bench.__main__ import main


def test_long_sequence_reports_memory_and_time_per_frame_count(capsys):
    threads = torch.get_num_threads()
    try:
        assert main(["long_sequence", "--quick", "--json"]) == 0
    finally:
        torch.set_num_threads(threads)
    result = json.loads(capsys.readouterr().out)
    frames = QUICK["long_sequence"]["frames"]
    assert result["benchmark"] == "long_sequence" and result["kept_layers"] == [1, 3, 4, 5]
    assert [r["frames"] for r in result["results"]] == [s for s in frames for _ in range(2)]
    for s in frames:
        rows = {r["variant"]: r for r in result["results"] if r["frames"] == s}
        assert 0 < rows["heads_only"]["peak_bytes"] <= rows["all_layers"]["peak_bytes"]
        assert rows["heads_only"]["time_s"] > 0
    assert set(result["memory_exponent"]) == {"heads_only", "all_layers"}
