"""The timing both peers share with gptlab's `bench` commands: 3 untimed warm-up steps, then
`steps` timed ones, waiting for the device before and after."""
import time

import torch


def time_steps(step, steps, device_type):
    """Seconds for `steps` calls of `step` (one training step returning its loss)."""
    for _ in range(3):
        step()
    if device_type == "cuda":
        torch.cuda.synchronize()
    start = time.perf_counter()
    for _ in range(steps):
        loss = step()
    loss.item()
    return time.perf_counter() - start
