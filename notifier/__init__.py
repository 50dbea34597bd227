"""Notifications: the HTTP API (port 8083), templated delivery over email, SMS and push, and
the local development stand-ins for the providers (fake provider server, SMTP sink).

The delivery and fan-out work lives here as plain async functions; ``workers`` only wraps
them in Dramatiq actors.
"""
