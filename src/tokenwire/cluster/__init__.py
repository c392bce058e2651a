"""Scale-out on Redis: stateless gateways and a pool of workers meeting in Redis.

``tokenwire serve --redis URL`` runs an :class:`~tokenwire.engine.Engine` whose role is
``gateway`` (:class:`Gateway`); ``tokenwire worker --redis URL`` runs a :class:`Worker`. Both
are the embedded engine with Redis behind its interfaces: the event log (:class:`RedisLogWriter`
on workers, :class:`RedisLogReader` on gateways), the job queue, signals, and the providers'
shared budgets (:class:`SharedBudget`, :class:`SharedScheduler`). See docs/deploy.md.
"""

from .budget import SharedBudget, SharedGrant
from .gateway import Gateway, RemoteTurn
from .keys import Keys
from .reader import RedisLogReader
from .scheduling import SharedScheduler
from .worker import Worker, serve_worker
from .writer import RedisLogWriter

__all__ = [
    "Gateway",
    "Keys",
    "RedisLogReader",
    "RedisLogWriter",
    "RemoteTurn",
    "SharedBudget",
    "SharedGrant",
    "SharedScheduler",
    "Worker",
    "serve_worker",
]
