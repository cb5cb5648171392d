"""Argument checks of the callback, shared by the framework adapters (which check before training starts)."""

from __future__ import annotations

import inspect
import math
from collections.abc import Mapping
from typing import Any

import torch

from lrtune.client.fallback import check_fallback
from lrtune.client.http import check_http_client
from lrtune.client.protocol import JobConfig
from lrtune.client.replay import ReplayLoader
from lrtune.tuner.config import plans


def check_options(
    model: object,
    optimizer: object,
    server_url: object,
    min_lr: object,
    max_lr: object,
    total_steps: object,
    val_fn: object,
    *,
    preset: object = "default",
    strategy: object = "autolrs",
    seed: object = 0,
    config: object = None,
    job_id: object = None,
    token: object = None,
    scaler: object = None,
    loader: object = None,
    extra_state: object = None,
    http_client: object = None,
    timeout_s: object = 10.0,
    max_stall_s: object = 2.0,
    fallback: object = "hold",
    guard_every: object = 8,
    offline_sync_steps: object = 16,
    strict: object = False,
    log_fn: object = None,
    **_: Any,
) -> JobConfig:
    """Check the callback's arguments; return the job config they make.

    Raises:
        TypeError: An argument of the wrong kind (with what to pass instead).
        ValueError: An invalid value, or an invalid job config.
    """
    if not isinstance(model, torch.nn.Module):
        raise TypeError(f"model must be a torch.nn.Module, got {type(model).__name__}")
    if not all(hasattr(optimizer, a) for a in ("param_groups", "state_dict", "load_state_dict")):
        raise TypeError(f"optimizer must be a torch optimizer, got {type(optimizer).__name__}")
    if server_url is not None and not isinstance(server_url, str):
        raise TypeError(f"server_url must be a string or None, got {type(server_url).__name__}")
    if isinstance(server_url, str) and not server_url.startswith(("http://", "https://")):
        raise ValueError(f"server_url must start with http:// or https://, got {server_url!r}")
    for name, v in (("min_lr", min_lr), ("max_lr", max_lr)):
        if v is None:
            raise TypeError(f"{name} is required")
        if isinstance(v, bool) or not isinstance(v, int | float) or not math.isfinite(v) or v <= 0:
            raise ValueError(f"{name} must be a positive finite number, got {v!r}")
    assert isinstance(min_lr, int | float) and isinstance(max_lr, int | float)
    if min_lr >= max_lr:
        raise ValueError(f"min_lr ({min_lr}) must be below max_lr ({max_lr})")
    if total_steps is None:
        raise TypeError("total_steps is required")
    if isinstance(total_steps, bool) or not isinstance(total_steps, int) or total_steps < 1:
        raise ValueError(f"total_steps must be a positive integer, got {total_steps!r}")
    if val_fn is not None and not callable(val_fn):
        raise TypeError(f"val_fn must be callable or None, got {type(val_fn).__name__}")
    if scaler is not None and not (hasattr(scaler, "state_dict") and hasattr(scaler, "load_state_dict")):
        raise TypeError(f"scaler must be a GradScaler (state_dict/load_state_dict), got {type(scaler).__name__}")
    if loader is not None and not isinstance(loader, ReplayLoader):
        raise TypeError(
            "loader must be a client.ReplayLoader (wrap your loader: ReplayLoader(loader)), got "
            f"{type(loader).__name__}"
        )
    if extra_state is not None:
        if not isinstance(extra_state, Mapping):
            raise TypeError("extra_state must map names to objects with state_dict()/load_state_dict()")
        for key, obj in extra_state.items():
            if not (hasattr(obj, "state_dict") and hasattr(obj, "load_state_dict")):
                raise TypeError(f"extra_state[{key!r}] has no state_dict()/load_state_dict()")
    check_http_client(http_client)
    check_fallback(fallback)
    if not isinstance(strict, bool):
        raise TypeError(f"strict must be True or False, got {type(strict).__name__}")
    if log_fn is not None and not callable(log_fn):
        raise TypeError(f"log_fn must be a function of a SegmentLog, got {type(log_fn).__name__}")
    if (job_id is None) != (token is None):
        raise ValueError("attach to a job with both job_id and token (or neither, to create a job)")
    if job_id is not None and server_url is None and http_client is None:
        raise ValueError("job_id needs a service: give server_url (or http_client)")
    for name, value in (("guard_every", guard_every), ("offline_sync_steps", offline_sync_steps)):
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise ValueError(f"{name} must be a positive integer, got {value!r}")
    if isinstance(timeout_s, bool) or not isinstance(timeout_s, int | float) or not timeout_s > 0:
        raise ValueError(f"timeout_s must be a positive number of seconds, got {timeout_s!r}")
    if (
        isinstance(max_stall_s, bool)
        or not isinstance(max_stall_s, int | float)
        or not math.isfinite(max_stall_s)
        or not max_stall_s > 0
    ):
        raise ValueError(f"max_stall_s must be a positive number of seconds, got {max_stall_s!r}")
    if config is not None and not isinstance(config, Mapping):
        raise TypeError(f"config must be a mapping of job config fields, got {type(config).__name__}")
    fields = {"min_lr", "max_lr", "total_steps", "preset", "strategy", "seed"} & set(config or {})
    if fields:
        raise ValueError(f"pass {', '.join(sorted(fields))} as arguments, not in config")
    extra = dict(config or {})
    planning = isinstance(preset, str) and isinstance(strategy, str) and plans(preset, strategy)
    if val_fn is not None and planning and extra.get("objective") is None:
        # The plan preset plans for the loss at the end of the budget: with a validation function, that is the
        # validation loss.
        extra["objective"] = "val"
    job_config = JobConfig.from_dict(
        {
            **extra,
            "min_lr": min_lr,
            "max_lr": max_lr,
            "total_steps": total_steps,
            "preset": preset,
            "strategy": strategy,
            "seed": seed,
        }
    )  # InvalidConfigError is a ValueError
    if job_config.objective == "val" and val_fn is None:
        raise ValueError("objective='val' needs val_fn, a function that returns the validation loss")
    return job_config


def check_adapter_options(
    server_url: object,
    min_lr: object,
    max_lr: object,
    total_steps: object,
    val_fn: object,
    options: Mapping[str, Any],
    taken: tuple[str, ...],
) -> None:
    """Check a framework adapter's arguments before training (with a stand-in model and optimizer).

    Args:
        server_url: As for the callback.
        min_lr: As for the callback.
        max_lr: As for the callback.
        total_steps: As for the callback.
        val_fn: As for the callback.
        options: The other keyword arguments for the callback.
        taken: Arguments the adapter fills in itself (from the framework).

    Raises:
        TypeError: An unknown or adapter-filled argument, or one of the wrong kind.
        ValueError: An invalid value.
    """
    from lrtune.client.callback import AutoLRSCallback

    clash = sorted(set(taken) & set(options))
    if clash:
        raise TypeError(f"{', '.join(clash)}: the adapter takes these from the framework")
    probe = torch.nn.Linear(1, 1)
    optimizer = torch.optim.SGD(probe.parameters(), lr=0.1)
    inspect.signature(AutoLRSCallback).bind(
        probe, optimizer, server_url, min_lr, max_lr, total_steps, val_fn, **options
    )
    check_options(probe, optimizer, server_url, min_lr, max_lr, total_steps, val_fn, **options)
