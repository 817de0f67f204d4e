"""Batch statistics combined over processes: nothing without a group; sums and process 0's copy with one (gloo)."""

from __future__ import annotations

import multiprocessing
import os
import socket

import torch
import torch.distributed as dist

from compose_gen import copy_from_first_process, sum_over_processes


def test_without_a_process_group_the_tensors_stay_as_they_are():
    counts, rows = torch.tensor([3.0, 1.0]), torch.arange(4.0)
    sum_over_processes(counts)
    copy_from_first_process(rows)
    assert counts.tolist() == [3.0, 1.0] and rows.tolist() == [0.0, 1.0, 2.0, 3.0]


def _process(rank: int, port: int, results: multiprocessing.Queue) -> None:
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    dist.init_process_group("gloo", rank=rank, world_size=2)
    try:
        counts, total = torch.tensor([1.0, 2.0]) * (rank + 1), torch.tensor(float(rank))
        rows = torch.full((3,), 10.0 + rank)
        table = torch.tensor([[1.0, 100.0], [2.0, 200.0]]) * (rank + 1)  # its column 0 is a view with gaps
        sum_over_processes(counts, total, table[:, 0])
        copy_from_first_process(rows)
        results.put((rank, counts.tolist(), total.item(), rows.tolist(), table.tolist()))
    finally:
        dist.destroy_process_group()


def test_two_processes_get_the_sums_and_process_0_s_copy():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    context = multiprocessing.get_context("fork")
    results = context.Queue()
    processes = [context.Process(target=_process, args=(rank, port, results), daemon=True) for rank in range(2)]
    for process in processes:
        process.start()
    seen = sorted(results.get(timeout=120) for _ in processes)
    for process in processes:
        process.join(60)
    # the view's column is summed, the column beside it left as each process had it
    assert seen == [
        (0, [3.0, 6.0], 1.0, [10.0, 10.0, 10.0], [[3.0, 100.0], [6.0, 200.0]]),
        (1, [3.0, 6.0], 1.0, [10.0, 10.0, 10.0], [[3.0, 200.0], [6.0, 400.0]]),
    ]
