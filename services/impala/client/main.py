"""``impala env``: a Gymnasium (or envpool) vector env as a client of an ActorPool.

Vector mode runs one stream of ``num_envs`` envs. With ``--reconnect-on-reset`` it runs ``num_envs``
one-env streams side by side, each redialing at every episode end (``max_steps`` is split among them).
Exit status: 0 when ``max_steps`` is reached or on SIGINT/SIGTERM, 1 when the pool refuses the client
(bad token, spec mismatch, protocol error), 2 (``UserError``, one line) when the env cannot be built
or no pool answered at the address within ``connect_attempts``.
"""

from __future__ import annotations

import asyncio
import logging
import signal

from impala.client.backends import make_batch
from impala.client.client import ClientError, ClientStats, EnvClient, UnreachableError
from impala.client.settings import ClientSettings
from impala.client.simulator import EnvBatch
from impala.client.wire import ProtocolError
from impala.core import heap, logs
from impala.core.errors import UserError
from impala.core.settings import secret_values

log = logging.getLogger(__name__)


def build_clients(settings: ClientSettings) -> list[EnvClient]:
    """One vector client, or ``num_envs`` one-env clients in reset-by-reconnect mode."""
    if not settings.reconnect_on_reset:
        return [EnvClient(make_batch(settings.backend, settings.env, settings.num_envs, settings.seed), settings)]
    n = settings.num_envs
    share = -(-settings.max_steps // n)  # ceil: every stream does its part of the budget
    return [
        EnvClient(
            make_batch(settings.backend, settings.env, 1, settings.seed + i),
            settings.model_copy(update={"client_name": f"{settings.stream_name()}-{i}", "max_steps": share}),
        )
        for i in range(n)
    ]


async def run_clients(clients: list[EnvClient], stop: asyncio.Event) -> list[ClientStats]:
    """Run every client until ``stop`` or its budget; the first fatal error stops the others and is raised."""

    async def one(client: EnvClient) -> ClientStats:
        try:
            return await client.run(stop)
        except BaseException:
            stop.set()
            raise

    results = await asyncio.gather(*(one(c) for c in clients), return_exceptions=True)
    for result in results:
        if isinstance(result, BaseException):
            raise result
    return [r for r in results if isinstance(r, ClientStats)]


def serve(batch: EnvBatch, config: ClientSettings) -> ClientStats:
    """Run one client in this thread until SIGINT/SIGTERM or ``config.max_steps``; raises ``ClientError``
    when the pool refuses it. Closes ``batch``. The SDK's one-call entry point."""
    try:
        return asyncio.run(_serve([EnvClient(batch, config)]))[0]
    finally:
        batch.close()


async def _serve(clients: list[EnvClient]) -> list[ClientStats]:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()

    def on_signal(sig: signal.Signals) -> None:
        log.info("signal received; finishing the current exchange", extra={"signal": sig.name})
        stop.set()

    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, on_signal, sig)
    return await run_clients(clients, stop)


def run(settings: ClientSettings) -> int:
    """Entry point of ``impala env``; returns the exit status."""
    logs.configure(settings.log_level, settings.log_format, secret_values(settings))
    heap.retain_freed_memory()
    log.info(
        "env client starting",
        extra={
            "address": settings.address,
            "env": settings.env,
            "envs": settings.num_envs,
            "backend": settings.backend,
        },
    )
    try:
        clients = build_clients(settings)
    except UserError:
        raise
    except Exception as err:  # non-discrete actions, envpool missing: say so and stop
        raise UserError(f"cannot build env {settings.env!r}: {err}") from err
    try:
        stats = asyncio.run(_serve(clients))
    except UnreachableError as err:
        raise UserError(str(err).removeprefix("UNAVAILABLE: ")) from err
    except (ClientError, ProtocolError) as err:
        log.error("env client gave up", extra={"error": str(err)})
        return 1
    finally:
        for client in clients:
            client.batch.close()
    log.info(
        "env client done",
        extra={"env_steps": sum(s.env_steps for s in stats), "episodes": sum(s.episodes for s in stats)},
    )
    return 0
