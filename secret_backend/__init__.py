"""datadog-secret-backend: the Datadog Agent's secret_backend_command.

Nothing in this package imports a cloud SDK at module load: backends are imported lazily
by the registry, only when a request needs them.
"""

__version__ = "0.1.0"
