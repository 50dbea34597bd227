"""What Dramatiq's command line loads: ``python -m workers`` runs ``dramatiq workers.app``.

Importing this module reads the settings once (``workers.broker.setup_broker``), builds the
RabbitMQ broker, makes it Dramatiq's global one and declares the actors on it
(``@dramatiq.actor`` binds each actor to the global broker at import). No connection is opened
until a worker starts or a message is sent. The package ``workers`` itself builds nothing, so
``python -m workers.dlq`` and ``python -m workers.queues`` need only the RabbitMQ settings.
"""

from workers.broker import setup_broker

BROKER = setup_broker()

from workers import actors  # noqa: E402 - the actors bind to the broker built just above

__all__ = ["BROKER", "actors"]
