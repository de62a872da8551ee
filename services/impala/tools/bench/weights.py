"""Weight broadcast: 6.4 MB to 1, 4 and 16 subscribers through the weight service vs a raw-socket
fan-out of the same bytes, measured by ``impala.tools.bench.weights_fanout`` (subscribers in a child process).

Figures are throughputs, N × 6.4 MB over the time until the last subscriber holds the version, so a
ratio below 1 means slower than raw sockets, as in every other figure; the target "at most 2× the raw
time" is a ratio of at least 0.5. Three figures per N: the fan-out alone (a version committed in the
service, to all N holding it, over the bulk data plane), publishing end to end
(``WeightPublisher.publish`` to all N, bulk) and the fan-out to subscribers that take gRPC chunks."""

from __future__ import annotations

from impala.tools.bench import weights_fanout as bench
from impala.tools.bench.report import Figure

SIZE_BYTES = 6_400_000
SUBSCRIBERS = (1, 4, 16)
ROUNDS_PER_SECOND = 3  # a round takes 10–200 ms here; most of the time goes to starting the processes


def bench_weights(seconds: float) -> list[Figure]:
    rounds = max(3, round(seconds * ROUNDS_PER_SECOND))
    figures = []
    for row in bench.run(SUBSCRIBERS, SIZE_BYTES, rounds):
        n = row["subscribers"]
        megabytes = n * SIZE_BYTES / 1e6
        raw = megabytes / row["raw_s"]
        label = f"weights 6.4 MB → {n} subscriber{'s' if n > 1 else ''}"
        for what, key in (
            ("fan-out", "fanout_s"),
            ("publish end to end", "publish_s"),
            ("fan-out, gRPC chunks", "chunked_s"),
        ):
            figures.append(
                Figure(f"{label}, {what}", megabytes / row[key], "MB/s delivered", "raw-socket fan-out", raw)
            )
    return figures
