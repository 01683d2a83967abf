"""Training model jobs on a Ray cluster: one Ray task per model, results written by the driver.

``--ray local`` starts a Ray instance on this machine (a laptop, the tests); ``--ray auto``
joins the cluster started on this machine by ``ray start``; ``--ray HOST:PORT`` (or
``ray://HOST:PORT``) joins a remote one.  Ray schedules the tasks; nothing here schedules.

How data and results travel, and why:

- the driver loads the base dataset once and puts it in Ray's object store; each node fetches
  it once and its tasks read it without copying (numpy arrays are shared in memory), so the
  worker nodes need neither the data folder nor the bundle;
- each task *returns* the trained state_dict, epsilon and accuracy (an MLP's state_dict is
  300 KB, the CNN's 4 MB: small beside training time), and the driver writes the model folder
  with the farm's atomic writer.  A shared filesystem was the alternative; returning the
  results needs none, keeps the driver the only writer (atomic renames stay on one machine,
  a half-written folder can never appear on a network share) and lets a rerun resume from the
  driver's view of the root alone;
- the ``mico`` package travels to the workers as a Ray ``py_modules`` runtime environment;
  the Python environment itself (torch, opacus, numpy, numba) must be installed on every node.

Each task asks for one CPU, plus one GPU when the device is CUDA (Ray then sets
``CUDA_VISIBLE_DEVICES`` and the task trains on ``cuda``).
"""

from __future__ import annotations

import contextlib
import os
import socket
import warnings
from collections.abc import Iterator, Sequence
from pathlib import Path

import numpy as np
import torch
from tqdm import tqdm

from mico.errors import InputError
from mico.tracks.recipes import Recipe
from mico.tracks.registry import Task
from mico.train.farm import (
    ModelJob,
    Trained,
    pending_jobs,
    train_job,
    with_noise,
    write_model_folder,
)

#: Seconds to wait for a cluster's address to accept a connection.
CONNECT_TIMEOUT = 10.0


def check_reachable(address: str) -> None:
    """Fail fast, in one line, when a ``HOST:PORT`` cluster address does not answer.

    ``ray.init`` would retry for a minute and print pages of logs first.  ``local`` and
    ``auto`` are checked by Ray itself (``auto`` fails at once when no cluster runs here).
    """
    if address in ("local", "auto"):
        return
    target = address.removeprefix("ray://")
    host, _, port = target.rpartition(":")
    if not host or not port.isdigit():
        raise InputError(f"--ray {address!r}: use local, auto, HOST:PORT or ray://HOST:PORT")
    try:
        socket.create_connection((host, int(port)), timeout=CONNECT_TIMEOUT).close()
    except OSError as exc:
        raise ConnectionError(
            f"cannot reach the Ray cluster at {address} ({exc}); start it with `ray start "
            "--head` on that machine or check --ray"
        ) from None


@contextlib.contextmanager
def ray_session(address: str, cpus: int = 0) -> Iterator[None]:
    """A connection to a Ray cluster (or a local instance with ``cpus`` CPUs), shut down after."""
    import ray

    check_reachable(address)
    runtime_env = {"py_modules": [str(Path(__file__).resolve().parent)]}
    kwargs: dict[str, object] = {"include_dashboard": False} if address == "local" else {}
    if address == "local" and cpus:
        kwargs["num_cpus"] = cpus
    try:
        ray.init(
            address=None if address == "local" else address,
            runtime_env=runtime_env,
            log_to_driver=False,
            **kwargs,
        )
    except (ConnectionError, RuntimeError, ValueError) as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise ConnectionError(
            f"could not join Ray at --ray {address}: {first}; start a cluster with `ray start "
            "--head` or use --ray local"
        ) from None
    try:
        yield
    finally:
        ray.shutdown()


def _train_task(
    job: ModelJob, task: Task, recipe: Recipe, data: tuple[np.ndarray, np.ndarray], device: str
) -> Trained:
    """The body of one Ray task: train one job on this worker and return the result."""
    torch.set_num_threads(1)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # object-store arrays are read-only
        x, y = torch.from_numpy(data[0]), torch.from_numpy(data[1])
    return train_job(job, task, recipe, x, y, torch.device(device))


def build_models_ray(
    jobs: Sequence[ModelJob],
    task: Task,
    recipe: Recipe,
    data_dir: Path,
    *,
    device: torch.device,
    address: str,
    workers: int = 0,
    desc: str = "models",
) -> int:
    """:func:`mico.train.farm.build_models` on Ray: every pending job as one task; returns how many
    were built.  ``workers`` caps a ``local`` instance's CPUs (0: all)."""
    import ray

    pending = with_noise(pending_jobs(jobs, task.model_files), recipe)
    if not pending:
        return 0
    dataset = task.load_dataset(data_dir)
    gpus = 1 if device.type == "cuda" else 0
    worker_device = "cuda" if gpus else "cpu"
    with ray_session(address, cpus=workers or (os.cpu_count() or 1)):
        data = ray.put((dataset.x.numpy(), dataset.y.numpy()))
        remote = ray.remote(num_cpus=1, num_gpus=gpus, max_retries=1)(_train_task)
        waiting = {remote.remote(job, task, recipe, data, worker_device): job for job in pending}
        with tqdm(total=len(pending), desc=desc, unit="model", disable=None) as bar:
            try:
                while waiting:
                    done, _ = ray.wait(list(waiting), num_returns=1)
                    job = waiting.pop(done[0])
                    write_model_folder(job, task, ray.get(done[0]))
                    bar.set_postfix_str(job.label)
                    bar.update()
            except BaseException:
                for ref in waiting:
                    ray.cancel(ref)
                raise
    return len(pending)
