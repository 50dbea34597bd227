"""Dramatiq workers: ``dramatiq workers`` (or ``python -m workers``, which also prepares metrics).

Importing this package builds the RabbitMQ broker from the environment and declares the actors
on it — Dramatiq's CLI finds the broker that way. The settings are read once, in
``setup_broker()``; nothing else happens at import (no connection is opened until a worker
starts or a message is sent).
"""

from workers.broker import setup_broker

BROKER = setup_broker()

from workers import actors  # noqa: E402 - the actors bind to the broker built just above

__all__ = ["BROKER", "actors"]
