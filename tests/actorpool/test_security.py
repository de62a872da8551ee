"""Bearer-token auth (constant-time compare) and TLS with a test CA (trustme)."""

from __future__ import annotations

from pathlib import Path

import grpc
import numpy as np
import pytest
import trustme

from tests.actorpool.harness import ScriptedClient, obs_for, running_pool

TOKEN = "pool-token-0123456789"


@pytest.mark.parametrize("presented", ["", "wrong-token-0123456789"])
async def test_missing_or_wrong_token_is_unauthenticated(presented: str) -> None:
    async with running_pool(insecure=False, token=TOKEN) as (pool, _):
        async with grpc.aio.insecure_channel(f"127.0.0.1:{pool.port}") as channel:
            client = ScriptedClient(channel, 1, token=presented)
            with pytest.raises(grpc.aio.AioRpcError) as err:
                await client.hello()
            assert err.value.code() == grpc.StatusCode.UNAUTHENTICATED
            assert TOKEN not in (err.value.details() or "")
        reason = "unknown_token" if presented else "missing_token"
        counted = {
            s.labels["reason"]: s.value
            for m in pool.metrics.rejected_streams.collect()
            for s in m.samples
            if s.name.endswith("_total") and s.labels["code"] == "UNAUTHENTICATED"
        }
        assert counted == {reason: 1.0, ({"unknown_token", "missing_token"} - {reason}).pop(): 0.0}


async def test_right_token_is_served() -> None:
    async with running_pool(insecure=False, token=TOKEN) as (pool, _):
        async with grpc.aio.insecure_channel(f"127.0.0.1:{pool.port}") as channel:
            client = ScriptedClient(channel, 1, token=TOKEN)
            await client.hello()
            assert (await client.step(obs_for(np.zeros(1), np.zeros(1), 1))).shape == (1,)


async def test_tls_with_a_test_certificate(tmp_path: Path) -> None:
    ca = trustme.CA()
    cert = ca.issue_cert("localhost", "127.0.0.1")
    cert_file, key_file = tmp_path / "tls.crt", tmp_path / "tls.key"
    cert.cert_chain_pems[0].write_to_path(str(cert_file))
    cert.private_key_pem.write_to_path(str(key_file))
    async with running_pool(insecure=False, token=TOKEN, tls_cert=cert_file, tls_key=key_file) as (pool, _):
        creds = grpc.ssl_channel_credentials(root_certificates=ca.cert_pem.bytes())
        async with grpc.aio.secure_channel(f"localhost:{pool.port}", creds) as channel:
            client = ScriptedClient(channel, 1, token=TOKEN)
            await client.hello()
            assert (await client.step(obs_for(np.zeros(1), np.zeros(1), 1))).shape == (1,)
        async with grpc.aio.insecure_channel(f"127.0.0.1:{pool.port}") as plain:  # plaintext to a TLS port fails
            with pytest.raises(grpc.aio.AioRpcError) as err:
                await ScriptedClient(plain, 1, token=TOKEN).hello()
            assert err.value.code() == grpc.StatusCode.UNAVAILABLE
