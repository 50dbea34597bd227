"""``python -m tests.integration.workers.poison_worker URL QUEUE LIMIT``: a worker that a message kills.

Its one actor ends the process on the spot (``os._exit``), as a segfault, an OOM kill or a
native-library crash would: RabbitMQ sees the consumer vanish with the message unacked and
delivers it again, to the next worker. The queue's delivery limit is what ends that loop.
"""

from __future__ import annotations

import os
import sys
import time

import dramatiq
from dramatiq import Worker

from workers.rabbitmq import QuorumRabbitmqBroker

POISON_ACTOR = "tests.poison"
KILLED_EXIT_CODE = 70
IDLE_EXIT_CODE = 3


def poison_broker(url: str, queue: str, limit: int) -> tuple[QuorumRabbitmqBroker, dramatiq.Actor[[], None]]:
    broker = QuorumRabbitmqBroker(url=url, confirm_delivery=True, delivery_limit=limit, middleware=[])

    def crash() -> None:
        os._exit(KILLED_EXIT_CODE)

    actor: dramatiq.Actor[[], None] = dramatiq.Actor(
        crash, broker=broker, actor_name=POISON_ACTOR, queue_name=queue, priority=0, options={}
    )
    return broker, actor


def main(argv: list[str]) -> int:
    url, queue, limit = argv[0], argv[1], int(argv[2])
    broker, _ = poison_broker(url, queue, limit)
    worker = Worker(broker, worker_threads=1)
    worker.start()
    time.sleep(20)  # the message ends the process long before; an empty queue ends here
    worker.stop()
    return IDLE_EXIT_CODE


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
