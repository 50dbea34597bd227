"""Dramatiq workers: ``python -m workers`` (metrics prepared, then ``dramatiq workers.app``).

Importing the package builds nothing: ``workers.app`` builds the broker and declares the actors
(Dramatiq's command line loads it), while the tools (``python -m workers.dlq``,
``python -m workers.queues``) need only the RabbitMQ settings.
"""
