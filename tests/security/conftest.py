"""The security checks reuse the configuration checks' tool lookup (nginx: fail under CI, else skip)."""

from tests.config.conftest import nginx_bin

__all__ = ["nginx_bin"]
