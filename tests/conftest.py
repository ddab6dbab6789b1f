"""Shared fixtures: one local Ray cluster per test session, tiny random-init models."""

import os

import pytest


@pytest.fixture(scope="session")
def ray_cluster():
    """A real Ray cluster: the one at RAY_ADDRESS when set, else a local 2-CPU one started here."""
    import ray

    if not ray.is_initialized():
        if os.environ.get("RAY_ADDRESS"):
            ray.init(address=os.environ["RAY_ADDRESS"])
        else:
            ray.init(address="local", num_cpus=2, include_dashboard=False, log_to_driver=False)
    yield ray
    ray.shutdown()


@pytest.fixture(scope="session")
def tiny_model():
    """(model, preprocess) of the 4-layer, 4-head, 32-pixel ``ccs-tiny`` config, random init, fp32, CPU."""
    import torch

    from ccs_ray import load_model

    torch.manual_seed(0)
    return load_model("ccs-tiny/none", device="cpu")
