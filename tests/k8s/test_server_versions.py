"""The Kubernetes manifests run the PostgreSQL, Redis and RabbitMQ series the tests run on (the
same rule as compose and CI, tests/config/test_supply_chain.py): moving a major moves them all."""

from __future__ import annotations

import pytest

from tests.config.test_supply_chain import SERVER_SERIES, series
from tests.k8s.manifests import OVERLAYS, Obj, by_kind, find


def server_images(objects: list[Obj]) -> dict[str, list[str]]:
    redis = find(objects, "RedisReplication", "redis-replication")["spec"]["kubernetesConfig"]["image"]
    images = {
        "postgres": [find(objects, "Cluster", "postgres")["spec"]["imageName"]],
        "rabbitmq": [find(objects, "RabbitmqCluster", "rabbitmq")["spec"]["image"]],
        "redis": [redis],
    }
    images["redis"] += [s["spec"]["kubernetesConfig"]["image"] for s in by_kind(objects, "RedisSentinel")]
    return images


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_the_servers_run_the_series_the_tests_run_on(rendered: dict[str, list[Obj]], overlay: str) -> None:
    for name, images in server_images(rendered[overlay]).items():
        for image in images:
            # The redis-operator's images tag v7.0.15.
            assert series(image.replace(":v", ":", 1), name) == SERVER_SERIES[name], f"{overlay}: {image}"
