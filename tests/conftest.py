"""Shared fixtures: one local Ray cluster per test session, tiny random-init models."""

import pytest


@pytest.fixture(scope="session")
def ray_cluster():
    """A real Ray cluster: the one at RAY_ADDRESS when set, else a local 2-CPU one started here."""
    import ray

    from ccs_ray.cluster import ensure_ray

    ensure_ray(num_cpus=2)
    yield ray
    ray.shutdown()


@pytest.fixture(scope="session")
def tiny_model():
    """(model, preprocess) of the 4-layer, 4-head, 32-pixel ``ccs-tiny`` config, random init, fp32, CPU."""
    import torch

    from ccs_ray import load_model

    torch.manual_seed(0)
    return load_model("ccs-tiny/none", device="cpu")
